{#
  One declared audience as rows of the canonical shape: the cohort id, its
  delivery and attribute, and the identifier columns as strings. An
  audience model may carry any subset of external_id, alias_name +
  alias_label, braze_id, email, phone and device_id; absent columns read as
  null. A model with none of them is a declaration error.
#}
{% macro audience_rows(cohort) %}
  {{ return(adapter.dispatch('audience_rows', 'cohort_sync')(cohort)) }}
{% endmacro %}

{% macro default__audience_rows(cohort) %}
  {%- set identifier_columns = cohort_sync.identifier_columns() -%}
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
        cast({{ cohort_sync.quoted_literal(cohort.delivery) }} as {{ dbt.type_string() }}) as delivery,
        cast({{ cohort_sync.quoted_literal(cohort.attribute_name) if cohort.attribute_name else 'null' }} as {{ dbt.type_string() }}) as attribute_name,
        {%- for name in identifier_columns %}
        {% if name in found -%}
        cast({{ adapter.quote(found[name]) }} as {{ dbt.type_string() }})
        {%- else -%}
        cast(null as {{ dbt.type_string() }})
        {%- endif %} as raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ relation }}
{%- endmacro %}


{# The identifier columns an audience model may carry, in the order of precedence. #}
{% macro identifier_columns() %}
  {{ return(['external_id', 'alias_name', 'alias_label', 'braze_id', 'email', 'phone', 'device_id']) }}
{% endmacro %}


{# A string value as a SQL literal, quotes escaped for the adapter. #}
{% macro quoted_literal(value) %}
  {{ return(adapter.dispatch('quoted_literal', 'cohort_sync')(value)) }}
{% endmacro %}

{% macro default__quoted_literal(value) -%}
  '{{ dbt.escape_single_quotes(value | string) }}'
{%- endmacro %}


{# What identifies a member: its identifier type and the identifier columns it is sent with. #}
{% macro member_columns() %}
  {{ return(['identifier_type', 'external_id', 'alias_name', 'alias_label', 'braze_id', 'email', 'phone', 'device_id']) }}
{% endmacro %}
