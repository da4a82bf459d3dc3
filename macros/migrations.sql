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
  - add_columns: add these columns where they are missing, with a default
    for the rows already there (on Spark the column is added without one:
    see spark__add_state_columns).

  To change a state table: change state_table_columns() (what a new
  warehouse gets) and append a step here (what an existing one needs).
  Never edit or reorder a released step. Keep STATE_SCHEMA_STEP in
  scripts/cohort_sync/warehouse/migrations.py equal to the last step's name.
#}
{% macro state_migrations() %}
  {%- set string = dbt.type_string() -%}
  {%- set bigint = dbt.type_bigint() -%}
  {{ return([
    {'name': '0001_state_tables',
     'create': ['cohort_sync_published_state', 'cohort_sync_published_cohorts', 'cohort_sync_delivery_log',
                'cohort_sync_run_history', 'cohort_sync_inflight', 'cohort_sync_lock']},
    {'name': '0002_plan_ids_and_resent_counts',
     'add_columns': {'cohort_sync_delivery_log': [('plan_id', string, 'null')],
                     'cohort_sync_run_history': [('resent_batches', bigint, '0')]}},
    {'name': '0003_spark_event_logs',
     'spark_event_logs': ['cohort_sync_published_state', 'cohort_sync_published_cohorts',
                          'cohort_sync_inflight', 'cohort_sync_lock']},
    {'name': '0004_notification_log',
     'create': ['cohort_sync_notification_log']},
    {'name': '0005_run_history_package_version',
     'add_columns': {'cohort_sync_run_history': [('package_version', string, "'0.1.0'")]}},
    {'name': '0006_users_track_delivery',
     'add_columns': {'cohort_sync_published_state': [('delivery', string, "'cohort_import'"),
                                                     ('attribute_name', string, 'null'),
                                                     ('braze_id', string, 'null'), ('email', string, 'null'),
                                                     ('phone', string, 'null')],
                     'cohort_sync_run_history': [('rejected', bigint, '0')]},
     'create': ['cohort_sync_rejected_changes']},
    {'name': '0007_attribute_syncs',
     'add_columns': {'cohort_sync_run_history': [('data_points', bigint, '0'),
                                                 ('full_resync', dbt.type_boolean(), 'false')],
                     'cohort_sync_rejected_changes': [('value_hash', string, 'null')],
                     'cohort_sync_delivery_log': [('data_points', bigint, 'null')]},
     'create': ['cohort_sync_attribute_state']},
    {'name': '0008_event_syncs',
     'add_columns': {'cohort_sync_run_history': [('event_watermark', bigint, 'null'), ('late_events', bigint, '0'),
                                                 ('possibly_duplicated', bigint, '0'), ('possibly_lost', bigint, '0'),
                                                 ('event_horizon', bigint, 'null')]},
     'create': ['cohort_sync_event_state', 'cohort_sync_event_inflight', 'cohort_sync_event_uncertain']},
  ]) }}
{% endmacro %}


{# The version of this dbt package, recorded with each step it applies. #}
{% macro package_version() %}
  {{ return('0.6.0') }}
{% endmacro %}


{#
  Brings the state tables to this version's schema. The hook expects SQL:
  the work is done through statements, and this returns a no-op select.
#}
{% macro migrate_state_tables() %}
  {%- if execute -%}
    {%- set record = cohort_sync.state_relation('cohort_sync_schema_migrations') -%}
    {%- do cohort_sync.lock_for_migration() -%}
    {%- do adapter.create_schema(record) -%}
    {%- do cohort_sync.create_state_tables(['cohort_sync_schema_migrations']) -%}
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
    {#- a state table dropped by hand since its step is created again, with the current columns -#}
    {%- do cohort_sync.create_state_tables(cohort_sync.state_table_columns().keys() | list) -%}
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
  serialises them on a session-level advisory lock, taken before anything
  is created or read and released once the steps are committed (not a
  transaction-scoped one: dbt-postgres commits each statement by default;
  a run that dies releases it with its connection). A DuckDB file takes
  one writer process. Spark has no such lock: its DDL looks before it
  acts, but two runs migrating the same schema at once can still both
  try to add a column, and the second fails (run it again). The session
  method's one-process metastore cannot run two; on Databricks, run one
  job at a time against a schema while upgrading.
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
  for an event log, whose view is then rebuilt to show them), in Spark's
  `add columns (...)`, without a default: Hive-format tables, Spark before
  3.4 and Delta without its column-defaults feature refuse one, so rows
  already there read null (the publisher reads such a column with its
  default: HISTORY_DEFAULTS in scripts/cohort_sync/run/history.py).
#}
{% macro spark__add_state_columns(table_name, columns) %}
  {%- set events = table_name in cohort_sync.state_event_keys() -%}
  {%- set stored = cohort_sync.state_relation(table_name ~ ('_events' if events else '')) -%}
  {%- set present = adapter.get_columns_in_relation(stored) | map(attribute='name') | map('lower') | list -%}
  {%- for column_name, data_type, default in columns if column_name not in present -%}
    {%- call statement('cohort_sync_add_' ~ column_name) -%}
      alter table {{ stored }} add columns ({{ column_name }} {{ data_type }})
    {%- endcall -%}
  {%- endfor -%}
  {%- if events -%}
    {%- do cohort_sync.create_state_view(table_name, replace=true) -%}
  {%- endif -%}
{% endmacro %}


{#
  Spark: an earlier version made the mutable state tables plain tables,
  which take no row deletes. Each becomes an event log of its rows (live,
  event_seq 1) behind a view of the same name. The log may exist already
  (0.1.0's hook created it empty before refusing the plain table), or hold
  part of the rows (a crash while copying): only rows whose key it lacks
  are copied, and the plain table is dropped only once every one of its
  keys is in the log. A run that dies after the drop leaves the log, whose
  view the next run creates.
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
      {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
      {#- null-safe key match (<=>: a name call's inflight row has no batch number) -#}
      {%- set keyed -%}
        {%- for key in cohort_sync.state_event_keys()[table_name] if key in columns -%}
          events.{{ key }} <=> plain.{{ key }}{{ ' and ' if not loop.last }}
        {%- endfor -%}
      {%- endset -%}
      {%- set not_logged -%}
        from {{ relation }} as plain
        where not exists (select 1 from {{ stored }} as events where {{ keyed }})
      {%- endset -%}
      {%- if adapter.get_relation(stored.database, stored.schema, stored.identifier) is none -%}
        {%- do cohort_sync.create_state_table(stored, cohort_sync.state_table_columns()[table_name]
                                                      + cohort_sync.state_event_columns()) -%}
      {%- endif -%}
      {%- call statement('cohort_sync_copy_' ~ table_name) -%}
        insert into {{ stored }} ({{ columns | join(', ') }}, is_live, event_seq)
        select {% for column in columns %}plain.{{ column }}, {% endfor %}true, 1 {{ not_logged }}
      {%- endcall -%}
      {%- call statement('cohort_sync_check_' ~ table_name, fetch_result=True) -%}
        select count(*) {{ not_logged }}
      {%- endcall -%}
      {%- set left = load_result('cohort_sync_check_' ~ table_name).table.columns[0].values()[0] -%}
      {%- if left != 0 -%}
        {{ exceptions.raise_compiler_error("cohort_sync: " ~ left ~ " rows of " ~ relation ~ " are not in "
            ~ stored ~ " after copying them; the table is kept. Run again, or copy them by hand (is_live = true, event_seq = 1) and drop it.") }}
      {%- endif -%}
      {%- do adapter.drop_relation(existing) -%}
    {%- endif -%}
    {%- if existing is none or not existing.is_view -%}
      {%- do cohort_sync.create_state_view(table_name) -%}
    {%- endif -%}
  {%- endfor -%}
{% endmacro %}
