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
