{#
  The package's on-run-end hook. Where `dbt run` cannot publish (every
  adapter but DuckDB: dbt Python models run in the dbt process there only),
  a run that planned the changes of declared cohorts says, once, that
  `cohort-sync publish` sends them. Silent with var
  cohort_sync_publish_on_run: false (the CLI is then the publishing step
  by design), when the run built no plan, and on DuckDB, where the
  cohort_sync_publish model publishes.

  `results` is the run's results, given to on-run-end hooks. Returns no SQL.
#}
{% macro publish_notice(results) %}
  {{ return(adapter.dispatch('publish_notice', 'cohort_sync')(results)) }}
{% endmacro %}

{% macro default__publish_notice(results) %}
  {%- set publish_on_run = var('cohort_sync_publish_on_run', true) -%}
  {%- if publish_on_run is string -%}  {#- given as text, e.g. --vars '{cohort_sync_publish_on_run: "false"}' -#}
    {%- set publish_on_run = publish_on_run | trim | lower in ['1', 'true', 'yes', 'on'] -%}
  {%- endif -%}
  {%- if execute and target.type != 'duckdb' and publish_on_run -%}
    {%- set cohorts = cohort_sync.declared_cohorts() -%}
    {%- set planned = [] -%}
    {%- for result in results or [] -%}
      {%- if result.node.package_name == 'cohort_sync' and result.node.name == 'cohort_sync_changes'
            and result.status == 'success' -%}
        {%- do planned.append(result) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if cohorts and planned -%}
      {%- do log("cohort_sync: this run planned the changes of " ~ cohorts | length
                 ~ (" cohort" if cohorts | length == 1 else " cohorts") ~ " on " ~ target.type
                 ~ " but does not publish them on this adapter: run `cohort-sync publish` with the same"
                 ~ " target to send them (dbt runs Python models in its own process on DuckDB only)."
                 ~ " Set var cohort_sync_publish_on_run: false where a scheduler runs `cohort-sync publish`"
                 ~ " after dbt, and this notice goes away.", info=true) -%}
    {%- endif -%}
  {%- endif -%}
{% endmacro %}
