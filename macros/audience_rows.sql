{#
  One declared audience as rows of the canonical shape: the cohort id and
  the four identifier columns as strings. An audience model may carry any
  subset of external_id, alias_name + alias_label and device_id; absent
  columns read as null. A model with none of them is a declaration error.
#}
{% macro audience_rows(cohort) %}
  {{ return(adapter.dispatch('audience_rows', 'cohort_sync')(cohort)) }}
{% endmacro %}

{% macro default__audience_rows(cohort) %}
  {%- set identifier_columns = ['external_id', 'alias_name', 'alias_label', 'device_id'] -%}
  {%- set relation = ref(cohort.package, cohort.model) -%}
  {%- set found = {} -%}
  {%- if execute -%}
    {%- for column in adapter.get_columns_in_relation(relation) -%}
      {%- if column.name | lower in identifier_columns -%}
        {%- do found.update({column.name | lower: column.name}) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if found | length == 0 -%}
      {{ exceptions.raise_compiler_error("cohort_sync: cohort '" ~ cohort.cohort_id ~ "': model '" ~ cohort.model ~ "' has none of the identifier columns " ~ identifier_columns | join(', ')) }}
    {%- endif -%}
  {%- endif %}
    select
        {{ cohort_sync.quoted_literal(cohort.cohort_id) }} as cohort_id,
        {%- for name in identifier_columns %}
        {% if name in found -%}
        cast({{ adapter.quote(found[name]) }} as {{ dbt.type_string() }})
        {%- else -%}
        cast(null as {{ dbt.type_string() }})
        {%- endif %} as raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ relation }}
{%- endmacro %}


{# A string value as a SQL literal, quotes escaped for the adapter. #}
{% macro quoted_literal(value) %}
  {{ return(adapter.dispatch('quoted_literal', 'cohort_sync')(value)) }}
{% endmacro %}

{% macro default__quoted_literal(value) -%}
  '{{ dbt.escape_single_quotes(value | string) }}'
{%- endmacro %}
