{#
  The publisher's state: what Braze has acknowledged, per cohort and
  member, plus the delivery log and run history. These are tables the
  publisher writes, not models: `dbt run` must never rebuild them. The
  package's on-run-start hook brings them to this version's schema
  (macros/migrations.sql) and models read them as sources.

  state_table_columns() is the current schema: what a new warehouse gets.
  A change to it ships with a step in state_migrations() that brings an
  existing warehouse to it.
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
      ('device_id', string), ('run_id', string), ('acknowledged_at', timestamp),
      ('delivery', string), ('attribute_name', string),
      ('braze_id', string), ('email', string), ('phone', string)
    ],
    'cohort_sync_published_cohorts': [
      ('cohort_id', string), ('cohort_name', string), ('created_at', timestamp),
      ('run_id', string), ('acknowledged_at', timestamp)
    ],
    'cohort_sync_delivery_log': [
      ('run_id', string), ('plan_id', string), ('cohort_id', string), ('request_kind', string),
      ('batch_number', bigint), ('added', bigint), ('removed', bigint),
      ('http_status', bigint), ('acknowledged_at', timestamp), ('data_points', bigint)
    ],
    'cohort_sync_run_history': [
      ('run_id', string), ('cohort_id', string), ('cohort_name', string),
      ('entry_point', string), ('started_at', timestamp), ('finished_at', timestamp),
      ('status', string), ('added', bigint), ('removed', bigint),
      ('requests', bigint), ('retries', bigint), ('resent_batches', bigint),
      ('members_after', bigint), ('error', string), ('package_version', string),
      ('rejected', bigint), ('data_points', bigint), ('full_resync', dbt.type_boolean()),
      ('event_watermark', bigint), ('late_events', bigint), ('possibly_duplicated', bigint),
      ('possibly_lost', bigint), ('event_horizon', bigint)
    ],
    'cohort_sync_rejected_changes': [
      ('run_id', string), ('plan_id', string), ('cohort_id', string), ('delivery', string),
      ('attribute_name', string), ('member_key', string), ('should_remove', dbt.type_boolean()),
      ('identifier_type', string), ('external_id', string), ('alias_name', string),
      ('alias_label', string), ('braze_id', string), ('email', string), ('phone', string),
      ('batch_number', bigint), ('error_type', string), ('rejected_at', timestamp),
      ('value_hash', string)
    ],
    'cohort_sync_attribute_state': [
      ('sync_id', string), ('member_key', string), ('attribute_name', string), ('value_hash', string),
      ('run_id', string), ('acknowledged_at', timestamp)
    ],
    'cohort_sync_event_state': [
      ('sync_id', string), ('event_id', string), ('member_key', string), ('event_time_ms', bigint),
      ('outcome', string), ('run_id', string), ('acknowledged_at', timestamp)
    ],
    'cohort_sync_event_inflight': [
      ('run_id', string), ('sync_id', string), ('batch_number', bigint), ('event_id', string),
      ('member_key', string), ('event_time_ms', bigint), ('sent_at', timestamp)
    ],
    'cohort_sync_event_uncertain': [
      ('sync_id', string), ('event_id', string), ('member_key', string), ('event_time_ms', bigint),
      ('outcome', string), ('sent_by_run', string), ('recorded_by_run', string), ('recorded_at', timestamp)
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
    ],
    'cohort_sync_schema_migrations': [
      ('step', string), ('package_version', string), ('applied_at', timestamp)
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


{#
  Creates the state tables among `table_names` that are missing, with the
  current columns. Idempotent: a table that exists is left as it is (the
  migration steps alter it).
#}
{% macro create_state_tables(table_names) %}
  {{ return(adapter.dispatch('create_state_tables', 'cohort_sync')(table_names)) }}
{% endmacro %}

{% macro default__create_state_tables(table_names) %}
  {%- set tables = cohort_sync.state_table_columns() -%}
  {%- for table_name in table_names -%}
    {%- set relation = cohort_sync.state_relation(table_name) -%}
    {%- if adapter.get_relation(relation.database, relation.schema, relation.identifier) is none -%}
      {%- do cohort_sync.create_state_table(relation, tables[table_name]) -%}
    {%- endif -%}
  {%- endfor -%}
{% endmacro %}


{#
  Spark (and Databricks through dbt-spark's dispatch chain): plain tables
  take no row deletes or transactions, so each state table the publisher
  updates is an append-only event log (`<name>_events`: its columns plus
  is_live and event_seq) behind a view `<name>` of the live rows. Models
  read the views like any other source. Keep the tables in step with
  EVENT_TABLES in scripts/cohort_sync/warehouse/ledger.py.
#}
{% macro state_event_keys() %}
  {{ return({
    'cohort_sync_published_state': ['cohort_id', 'delivery', 'attribute_name', 'member_key'],
    'cohort_sync_published_cohorts': ['cohort_id'],
    'cohort_sync_attribute_state': ['sync_id', 'member_key', 'attribute_name'],
    'cohort_sync_inflight': ['run_id', 'cohort_id', 'request_kind', 'batch_number'],
    'cohort_sync_event_inflight': ['run_id', 'sync_id', 'event_id'],
    'cohort_sync_lock': ['lock_name']
  }) }}
{% endmacro %}

{% macro spark__create_state_tables(table_names) %}
  {%- set keys = cohort_sync.state_event_keys() -%}
  {%- set tables = cohort_sync.state_table_columns() -%}
  {%- for table_name in table_names -%}
    {%- set relation = cohort_sync.state_relation(table_name) -%}
    {%- set existing = adapter.get_relation(relation.database, relation.schema, relation.identifier) -%}
    {%- if table_name not in keys -%}
      {%- if existing is none -%}
        {%- do cohort_sync.create_state_table(relation, tables[table_name]) -%}
      {%- endif -%}
    {#- a plain table of an earlier version is left for step 0002 to convert -#}
    {%- elif existing is none or existing.is_view -%}
      {%- set stored = cohort_sync.state_relation(table_name ~ '_events') -%}
      {%- if adapter.get_relation(stored.database, stored.schema, stored.identifier) is none -%}
        {%- do cohort_sync.create_state_table(stored, tables[table_name] + cohort_sync.state_event_columns()) -%}
      {%- endif -%}
      {%- if existing is none -%}
        {%- do cohort_sync.create_state_view(table_name) -%}
      {%- endif -%}
    {%- endif -%}
  {%- endfor -%}
{% endmacro %}

{% macro state_event_columns() %}
  {{ return([('is_live', dbt.type_boolean()), ('event_seq', dbt.type_bigint())]) }}
{% endmacro %}

{#
  What a column added by a migration step reads as in an event log's rows
  from before it (Spark adds columns without a default): the views show
  it, and key on it, with this value.
#}
{% macro state_event_defaults() %}
  {{ return({'delivery': "'cohort_import'", 'attribute_name': "''"}) }}
{% endmacro %}

{#
  The view of an event log's live rows: the latest event per key, if it is
  not a tombstone. Its columns are the log's own (less is_live and
  event_seq), so a log an earlier version made gets a view of what it has;
  a key column the log does not have yet is left out of the key.
#}
{% macro create_state_view(table_name, replace=false) %}
  {%- set defaults = cohort_sync.state_event_defaults() -%}
  {%- set stored = cohort_sync.state_relation(table_name ~ '_events') -%}
  {%- set columns = [] -%}
  {%- for column in adapter.get_columns_in_relation(stored) if column.name | lower not in ('is_live', 'event_seq') -%}
    {%- do columns.append(column.name | lower) -%}
  {%- endfor -%}
  {%- set keys = [] -%}
  {%- for key in cohort_sync.state_event_keys()[table_name] if key in columns -%}
    {%- do keys.append("coalesce(" ~ key ~ ", " ~ defaults[key] ~ ")" if key in defaults else key) -%}
  {%- endfor -%}
  {%- call statement('cohort_sync_view_' ~ table_name) -%}
    create {{ 'or replace view' if replace else 'view if not exists' }} {{ cohort_sync.state_relation(table_name) }} as
    select
      {%- for column in columns %}
      {{ "coalesce(" ~ column ~ ", " ~ defaults[column] ~ ") as " ~ column if column == 'delivery' else column }}{{ "," if not loop.last }}
      {%- endfor %}
    from (
      select
        *,
        row_number() over (partition by {{ keys | join(', ') }} order by event_seq desc) as event_rank
      from {{ stored }}
    ) as events
    where event_rank = 1 and is_live
  {%- endcall -%}
{% endmacro %}
