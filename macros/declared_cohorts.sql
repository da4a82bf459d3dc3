{#
  The cohort registry: the var `cohort_sync_cohorts`, a list of
  declarations such as

    - model: churn_risk_customers        # the audience model (required)
      name: "Churn-risk customers"       # what marketers see in Braze (required)
      cohort_id: churn_risk              # stable id Braze stores (default: model)
      package: my_project                # package of the model (default: the root project)
      description: "..."                 # optional, for people

  Returns the validated declarations as dicts with keys cohort_id, name,
  model, package and description. A malformed declaration fails compilation with a
  message naming the cohort and the field.
#}
{% macro declared_cohorts() %}
  {{ return(adapter.dispatch('declared_cohorts', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__declared_cohorts() %}
  {%- set allowed_fields = ['model', 'name', 'cohort_id', 'package', 'description'] -%}
  {%- set registry = var('cohort_sync_cohorts', []) -%}
  {%- if registry is none -%}
    {%- set registry = [] -%}
  {%- endif -%}
  {%- if registry is string or registry is mapping -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_cohorts' must be a list of cohort declarations, got: " ~ registry) }}
  {%- endif -%}

  {%- set cohorts = [] -%}
  {%- set seen = {} -%}
  {%- for entry in registry -%}
    {%- set position = "cohort_sync_cohorts[" ~ loop.index0 ~ "]" -%}
    {%- if entry is not mapping -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ position ~ " must be a mapping with at least 'model' and 'name', got: " ~ entry) }}
    {%- endif -%}

    {%- set model = entry.get('model') -%}
    {%- if model is not string or model | trim == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ position ~ ": field 'model' is required (the audience model's name)") }}
    {%- endif -%}
    {%- set cohort_id = (entry.get('cohort_id') if entry.get('cohort_id') is not none else model) | string | trim -%}
    {%- set label = "cohort '" ~ cohort_id ~ "' (" ~ position ~ ")" -%}

    {%- for field in entry if field not in allowed_fields -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": unknown setting '" ~ field ~ "'; allowed settings are " ~ allowed_fields | join(', ')) }}
    {%- endfor -%}
    {%- if cohort_id == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'cohort_id' must not be empty") }}
    {%- endif -%}
    {%- set name = entry.get('name') -%}
    {%- if name is none or name | string | trim == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'name' is required and must not be empty") }}
    {%- endif -%}
    {%- if cohort_id in seen -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'cohort_id' duplicates " ~ seen[cohort_id] ~ "; each cohort_id must be declared once") }}
    {%- endif -%}
    {%- do seen.update({cohort_id: position}) -%}

    {%- do cohorts.append({
        'cohort_id': cohort_id,
        'name': name | string | trim,
        'model': model | trim,
        'package': (entry.get('package') or project_name) | string | trim,
        'description': entry.get('description') or ''
    }) -%}
  {%- endfor -%}
  {{ return(cohorts) }}
{% endmacro %}


{#
  The declared cohorts as a select of literals (cohort_id, cohort_name,
  model_name), for use as a CTE body.
#}
{% macro declared_cohorts_sql() %}
  {{ return(adapter.dispatch('declared_cohorts_sql', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__declared_cohorts_sql() %}
  {%- set string = dbt.type_string() -%}
  {%- for cohort in cohort_sync.declared_cohorts() %}
    select
        cast({{ cohort_sync.quoted_literal(cohort.cohort_id) }} as {{ string }}) as cohort_id,
        cast({{ cohort_sync.quoted_literal(cohort.name) }} as {{ string }}) as cohort_name,
        cast({{ cohort_sync.quoted_literal(cohort.model) }} as {{ string }}) as model_name
    {% if not loop.last %}union all{% endif %}
  {%- else %}
    select
        cast(null as {{ string }}) as cohort_id,
        cast(null as {{ string }}) as cohort_name,
        cast(null as {{ string }}) as model_name
    where 1 = 0
  {%- endfor %}
{% endmacro %}


{#
  A var holding a list of cohort ids (cohort_sync_clear_cohorts,
  cohort_sync_allow_removals), validated.
#}
{% macro cohort_id_list(var_name) %}
  {{ return(adapter.dispatch('cohort_id_list', 'cohort_sync')(var_name)) }}
{% endmacro %}

{% macro default__cohort_id_list(var_name) %}
  {%- set value = var(var_name, []) -%}
  {%- if value is none -%}
    {{ return([]) }}
  {%- endif -%}
  {%- if value is string -%}
    {%- set value = [value] -%}
  {%- endif -%}
  {%- if value is mapping or value is not iterable -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var '" ~ var_name ~ "' must be a list of cohort ids, got: " ~ value) }}
  {%- endif -%}
  {%- set ids = [] -%}
  {%- for item in value -%}
    {%- if item is not string or item | trim == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: var '" ~ var_name ~ "' must be a list of cohort ids, got the item: " ~ item) }}
    {%- endif -%}
    {%- do ids.append(item | trim) -%}
  {%- endfor -%}
  {{ return(ids) }}
{% endmacro %}


{#
  Cohorts no longer declared whose Braze members are to be removed
  (var cohort_sync_clear_cohorts). Clearing is guarded like any mass removal.
#}
{% macro cleared_cohorts() %}
  {{ return(adapter.dispatch('cleared_cohorts', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__cleared_cohorts() %}
  {%- set cleared = cohort_sync.cohort_id_list('cohort_sync_clear_cohorts') -%}
  {%- for cohort in cohort_sync.declared_cohorts() if cohort.cohort_id in cleared -%}
    {{ exceptions.raise_compiler_error("cohort_sync: cohort '" ~ cohort.cohort_id ~ "' is both declared in cohort_sync_cohorts and listed in cohort_sync_clear_cohorts; remove one of them") }}
  {%- endfor -%}
  {{ return(cleared) }}
{% endmacro %}


{# A list of strings as a SQL list of literals: ('a', 'b'). #}
{% macro literal_list(values) %}
  {{ return(adapter.dispatch('literal_list', 'cohort_sync')(values)) }}
{% endmacro %}

{% macro default__literal_list(values) -%}
  ({%- for value in values -%}{{ cohort_sync.quoted_literal(value) }}{{ ", " if not loop.last }}{%- endfor -%})
{%- endmacro %}
