{# The demo's "today", from var('demo_as_of'). #}
{% macro demo_as_of() -%}
  cast('{{ var("demo_as_of") }}' as date)
{%- endmacro %}
