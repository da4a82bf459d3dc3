{#
  Upgrades of the publisher's state tables, as ordered, named steps: the
  one place that lists every change ever made to their schema.

  The package's on-run-start hook (and every `cohort-sync` command, which
  runs `dbt run-operation cohort_sync.migrate_state_tables` when the
  warehouse is behind) applies, in order, each step not yet recorded in
  cohort_sync_schema_migrations, then records it. Every step is
  idempotent: it looks at what exists before it changes anything, so a
  warehouse of any earlier version, a new one, or one left half-way by a
  crash all end the same. Rows are never dropped: new tables are created,
  new columns added with their defaults, Spark's views rebuilt over the
  same event logs.

  Step kinds:
  - create: create these state tables if missing (with the current columns);
  - spark_event_logs: on Spark, turn plain tables of an earlier version
    into event logs behind views, keeping their rows (nothing elsewhere);
  - add_columns: add these columns, with a default for existing rows,
    where they are missing.

  To change a state table: change state_table_columns() (what a new
  warehouse gets) and append a step here (what an existing one needs).
  Never edit or reorder a released step. Keep STATE_SCHEMA_STEP in
  scripts/cohort_sync/migrations.py equal to the last step's name.
#}
{% macro state_migrations() %}
  {%- set string = dbt.type_string() -%}
  {{ return([
    {'name': '0001_state_tables', 'since': '0.1.0',
     'create': ['cohort_sync_published_state', 'cohort_sync_published_cohorts', 'cohort_sync_delivery_log',
                'cohort_sync_run_history', 'cohort_sync_inflight', 'cohort_sync_lock']},
    {'name': '0002_spark_event_logs', 'since': '0.1.0',
     'spark_event_logs': ['cohort_sync_published_state', 'cohort_sync_published_cohorts',
                          'cohort_sync_inflight', 'cohort_sync_lock']},
    {'name': '0003_notification_log', 'since': '0.1.0',
     'create': ['cohort_sync_notification_log']},
    {'name': '0004_run_history_package_version', 'since': '0.2.0',
     'add_columns': {'cohort_sync_run_history': [('package_version', string, "'0.1.0'")]}},
  ]) }}
{% endmacro %}


{# The version of this dbt package, recorded with each step it applies. #}
{% macro package_version() %}
  {{ return('0.2.0') }}
{% endmacro %}


{#
  Brings the state tables to this version's schema. The hook expects SQL:
  the work is done through statements, and this returns a no-op select.
#}
{% macro migrate_state_tables() %}
  {%- if execute -%}
    {%- set record = cohort_sync.state_relation('cohort_sync_schema_migrations') -%}
    {%- do adapter.create_schema(record) -%}
    {%- do cohort_sync.lock_for_migration() -%}
    {#- tables that are missing (a new warehouse, or one dropped by hand) are
        created with the current columns: cheap, dbt has the relations cached -#}
    {%- do cohort_sync.create_state_tables(cohort_sync.state_table_columns().keys() | list) -%}
    {%- call statement('cohort_sync_applied_steps', fetch_result=True) -%}
      select distinct step from {{ record }}
    {%- endcall -%}
    {%- set applied = load_result('cohort_sync_applied_steps').table.columns[0].values() | list -%}
    {%- set done = [] -%}
    {%- for step in cohort_sync.state_migrations() if step.name not in applied -%}
      {%- do cohort_sync.apply_migration(step) -%}
      {%- call statement('cohort_sync_record_' ~ step.name) -%}
        insert into {{ record }} (step, package_version, applied_at)
        values ('{{ step.name }}', '{{ cohort_sync.package_version() }}', {{ dbt.current_timestamp() }})
      {%- endcall -%}
      {%- do done.append(step.name) -%}
    {%- endfor -%}
    {#- statements run while the hook renders are not committed by dbt -#}
    {%- do adapter.commit() -%}
    {%- do cohort_sync.lock_for_migration(release=true) -%}
    {%- if done -%}
      {%- do log("cohort_sync: state tables migrated to " ~ cohort_sync.package_version() ~ " in " ~ record.schema
                 ~ ": " ~ done | join(', '), info=true) -%}
    {%- endif -%}
  {%- endif -%}
  select 1 as cohort_sync_state_ready
{% endmacro %}


{# One step, by its kind. #}
{% macro apply_migration(step) %}
  {%- if step.create -%}
    {%- do cohort_sync.create_state_tables(step.create) -%}
  {%- endif -%}
  {%- if step.spark_event_logs -%}
    {%- do cohort_sync.convert_to_event_logs(step.spark_event_logs) -%}
  {%- endif -%}
  {%- for table_name, columns in (step.add_columns or {}).items() -%}
    {%- do cohort_sync.add_state_columns(table_name, columns) -%}
  {%- endfor -%}
{% endmacro %}


{#
  Two runs that start at once must not both create or alter: PostgreSQL
  serialises them on a session-level advisory lock, taken before the
  record is read and released once the steps are committed (a
  transaction-scoped one would not do: dbt may run each statement in its
  own transaction; a run that dies releases it with its connection).
  DuckDB files take one writer process; on Spark the DDL is idempotent
  and a column another run added first is skipped.
#}
{% macro lock_for_migration(release=false) %}
  {{ return(adapter.dispatch('lock_for_migration', 'cohort_sync')(release)) }}
{% endmacro %}

{% macro default__lock_for_migration(release) %}
{% endmacro %}

{% macro postgres__lock_for_migration(release) %}
  {%- call statement('cohort_sync_migration_lock') -%}
    select {{ 'pg_advisory_unlock' if release else 'pg_advisory_lock' }}(7203914455104217)
  {%- endcall -%}
{% endmacro %}


{#
  Adds `columns` ((name, type, default SQL) each) to a state table where
  missing; rows already there take the default.
#}
{% macro add_state_columns(table_name, columns) %}
  {{ return(adapter.dispatch('add_state_columns', 'cohort_sync')(table_name, columns)) }}
{% endmacro %}

{% macro default__add_state_columns(table_name, columns) %}
  {%- set relation = cohort_sync.state_relation(table_name) -%}
  {%- set present = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
  {%- for column_name, data_type, default in columns if column_name not in present -%}
    {%- call statement('cohort_sync_add_' ~ column_name) -%}
      alter table {{ relation }} add column if not exists {{ column_name }} {{ data_type }} default {{ default }}
    {%- endcall -%}
  {%- endfor -%}
{% endmacro %}

{#
  Spark: the columns go to the table that holds the rows (`<name>_events`
  for an event log, whose view is then rebuilt to show them); Spark's
  syntax is `add columns (...)`, and rows already there read the default.
#}
{% macro spark__add_state_columns(table_name, columns) %}
  {%- set events = table_name in cohort_sync.state_event_keys() -%}
  {%- set stored = cohort_sync.state_relation(table_name ~ ('_events' if events else '')) -%}
  {%- set present = adapter.get_columns_in_relation(stored) | map(attribute='name') | map('lower') | list -%}
  {%- for column_name, data_type, default in columns if column_name not in present -%}
    {%- call statement('cohort_sync_add_' ~ column_name) -%}
      alter table {{ stored }} add columns ({{ column_name }} {{ data_type }} default {{ default }})
    {%- endcall -%}
  {%- endfor -%}
  {%- if events -%}
    {%- do cohort_sync.create_state_view(table_name, replace=true) -%}
  {%- endif -%}
{% endmacro %}


{#
  Spark: an earlier version made the mutable state tables plain tables,
  which take no row deletes. Each becomes an event log of its rows (live,
  event_seq 1) behind a view of the same name. A crash part-way is
  repaired by the next run: the copy is made once (`if not exists`), and a
  dropped table's view is created from its log.
#}
{% macro convert_to_event_logs(table_names) %}
  {{ return(adapter.dispatch('convert_to_event_logs', 'cohort_sync')(table_names)) }}
{% endmacro %}

{% macro default__convert_to_event_logs(table_names) %}
{% endmacro %}

{% macro spark__convert_to_event_logs(table_names) %}
  {%- for table_name in table_names -%}
    {%- set relation = cohort_sync.state_relation(table_name) -%}
    {%- set stored = cohort_sync.state_relation(table_name ~ '_events') -%}
    {%- set existing = adapter.get_relation(relation.database, relation.schema, relation.identifier) -%}
    {%- if existing is not none and not existing.is_view -%}
      {%- call statement('cohort_sync_copy_' ~ table_name) -%}
        create table if not exists {{ stored }} as
        select *, true as is_live, cast(1 as {{ dbt.type_bigint() }}) as event_seq from {{ relation }}
      {%- endcall -%}
      {%- do adapter.drop_relation(existing) -%}
    {%- endif -%}
    {%- if existing is none or not existing.is_view -%}
      {%- do cohort_sync.create_state_view(table_name) -%}
    {%- endif -%}
  {%- endfor -%}
{% endmacro %}
