{#
  The publisher's state: what Braze has acknowledged, per cohort and
  member, plus the delivery log and run history. These are tables the
  publisher writes, not models: `dbt run` must never rebuild them. The
  package creates them when missing (on-run-start) and models read them
  as sources.
#}
{% macro state_relation(table_name) %}
  {{ return(adapter.dispatch('state_relation', 'cohort_sync')(table_name)) }}
{% endmacro %}

{% macro default__state_relation(table_name) %}
  {#- dbt-spark targets have no database: leave it out there -#}
  {{ return(api.Relation.create(
      database=(target.database if target.database is defined else none),
      schema=var('cohort_sync_state_schema', target.schema),
      identifier=table_name,
      type='table')) }}
{% endmacro %}


{% macro state_table_columns() %}
  {{ return(adapter.dispatch('state_table_columns', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__state_table_columns() %}
  {%- set string = dbt.type_string() -%}
  {%- set timestamp = dbt.type_timestamp() -%}
  {%- set bigint = dbt.type_bigint() -%}
  {{ return({
    'cohort_sync_published_state': [
      ('cohort_id', string), ('member_key', string), ('identifier_type', string),
      ('external_id', string), ('alias_name', string), ('alias_label', string),
      ('device_id', string), ('run_id', string), ('acknowledged_at', timestamp)
    ],
    'cohort_sync_published_cohorts': [
      ('cohort_id', string), ('cohort_name', string), ('created_at', timestamp),
      ('run_id', string), ('acknowledged_at', timestamp)
    ],
    'cohort_sync_delivery_log': [
      ('run_id', string), ('plan_id', string), ('cohort_id', string), ('request_kind', string),
      ('batch_number', bigint), ('added', bigint), ('removed', bigint),
      ('http_status', bigint), ('acknowledged_at', timestamp)
    ],
    'cohort_sync_run_history': [
      ('run_id', string), ('cohort_id', string), ('cohort_name', string),
      ('entry_point', string), ('started_at', timestamp), ('finished_at', timestamp),
      ('status', string), ('added', bigint), ('removed', bigint),
      ('requests', bigint), ('retries', bigint), ('resent_batches', bigint),
      ('members_after', bigint), ('error', string)
    ],
    'cohort_sync_inflight': [
      ('run_id', string), ('cohort_id', string), ('request_kind', string),
      ('batch_number', bigint), ('identifiers', bigint), ('sent_at', timestamp)
    ],
    'cohort_sync_notification_log': [
      ('run_id', string), ('cohort_id', string), ('outcome', string), ('channel', string),
      ('recipient', string), ('status', string), ('error', string), ('sent_at', timestamp)
    ],
    'cohort_sync_lock': [
      ('lock_name', string), ('run_id', string), ('owner', string),
      ('entry_point', string), ('acquired_at', timestamp), ('expires_at', timestamp)
    ]
  }) }}
{% endmacro %}


{# One state table, from its (name, type) columns. #}
{% macro create_state_table(relation, columns) %}
  {%- call statement('cohort_sync_create_' ~ relation.identifier) -%}
    create table if not exists {{ relation }} (
      {%- for column_name, data_type in columns %}
      {{ column_name }} {{ data_type }}{{ "," if not loop.last }}
      {%- endfor %}
    )
  {%- endcall -%}
{% endmacro %}


{% macro create_state_tables() %}
  {{ return(adapter.dispatch('create_state_tables', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__create_state_tables() %}
  {%- if execute -%}
    {%- set tables = cohort_sync.state_table_columns() -%}
    {%- set created = [] -%}
    {%- do adapter.create_schema(cohort_sync.state_relation('cohort_sync_published_state')) -%}
    {%- for table_name, columns in tables.items() -%}
      {%- set relation = cohort_sync.state_relation(table_name) -%}
      {%- if adapter.get_relation(relation.database, relation.schema, relation.identifier) is none -%}
        {%- do cohort_sync.create_state_table(relation, columns) -%}
        {%- do created.append(table_name) -%}
      {%- endif -%}
    {%- endfor -%}
    {#- statements run while the hook renders are not committed by dbt -#}
    {%- if created -%}
      {%- do adapter.commit() -%}
    {%- endif -%}
  {%- endif -%}
  {# hooks expect SQL; the work above is done through statements #}
  select 1 as cohort_sync_state_ready
{% endmacro %}


{#
  Spark (and Databricks through dbt-spark's dispatch chain): plain tables
  take no row deletes or transactions, so each state table the publisher
  updates is an append-only event log (`<name>_events`: its columns plus
  is_live and event_seq) behind a view `<name>` of the live rows. Models
  read the views like any other source. Keep the tables in step with
  EVENT_TABLES in scripts/cohort_sync/ledger.py.
#}
{% macro state_event_keys() %}
  {{ return({
    'cohort_sync_published_state': ['cohort_id', 'member_key'],
    'cohort_sync_published_cohorts': ['cohort_id'],
    'cohort_sync_inflight': ['run_id', 'cohort_id', 'request_kind', 'batch_number'],
    'cohort_sync_lock': ['lock_name']
  }) }}
{% endmacro %}

{% macro spark__create_state_tables() %}
  {%- if execute -%}
    {%- set keys = cohort_sync.state_event_keys() -%}
    {%- do adapter.create_schema(cohort_sync.state_relation('cohort_sync_published_state')) -%}
    {%- for table_name, columns in cohort_sync.state_table_columns().items() -%}
      {%- set relation = cohort_sync.state_relation(table_name) -%}
      {%- set stored = cohort_sync.state_relation(table_name ~ '_events') if table_name in keys else relation -%}
      {%- set stored_columns = columns + ([('is_live', dbt.type_boolean()), ('event_seq', dbt.type_bigint())] if table_name in keys else []) -%}
      {%- if adapter.get_relation(stored.database, stored.schema, stored.identifier) is none -%}
        {%- do cohort_sync.create_state_table(stored, stored_columns) -%}
      {%- endif -%}
      {%- set existing = adapter.get_relation(relation.database, relation.schema, relation.identifier) if table_name in keys else none -%}
      {%- if existing is not none and not existing.is_view -%}
        {{ exceptions.raise_compiler_error(
            "cohort_sync: " ~ existing ~ " is a table, but on Spark it must be a view of " ~ stored
            ~ " (an earlier version made a table). Copy its rows into " ~ stored
            ~ " with is_live = true and event_seq = 1, drop it, and run again.") }}
      {%- endif -%}
      {%- if table_name in keys and existing is none -%}
        {%- call statement('cohort_sync_create_' ~ table_name) -%}
          create view if not exists {{ relation }} as
          select {{ columns | map(attribute=0) | join(', ') }}
          from (
            select
              *,
              row_number() over (partition by {{ keys[table_name] | join(', ') }} order by event_seq desc) as event_rank
            from {{ stored }}
          ) as events
          where event_rank = 1 and is_live
        {%- endcall -%}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
  select 1 as cohort_sync_state_ready
{% endmacro %}
