{#
  A string expression without its leading and trailing whitespace: every
  character of Unicode's White_Space property (tab, line feed, vertical
  tab, form feed, carriage return, space, U+0085 next line, U+00A0
  no-break space, U+1680, U+2000 to U+200A, U+2028, U+2029, U+202F,
  U+205F, U+3000 ideographic space), not only the spaces `trim()` removes.
  Whitespace inside the value is kept. Null stays null.

  The characters are listed, not written `\s`: DuckDB's `\s` (RE2) is
  ASCII only, and PostgreSQL's depends on the database's locale. Each
  dialect spells the same class in its own regular-expression syntax.
#}
{% macro trim_whitespace(expression) %}
  {{ return(adapter.dispatch('trim_whitespace', 'cohort_sync')(expression)) }}
{% endmacro %}

{# DuckDB (RE2) and others: a character is \x{hex}; 'g' replaces at both ends. #}
{% macro default__trim_whitespace(expression) -%}
  {%- set space = cohort_sync.whitespace_class('\\x{%X}') -%}
  regexp_replace({{ expression }}, '^{{ space }}+|{{ space }}+$', '', 'g')
{%- endmacro %}

{# PostgreSQL's regular expressions write a character \uhhhh, not \x{hex}. #}
{% macro postgres__trim_whitespace(expression) -%}
  {%- set space = cohort_sync.whitespace_class('\\u%04X') -%}
  regexp_replace({{ expression }}, '^{{ space }}+|{{ space }}+$', '', 'g')
{%- endmacro %}

{# Spark (Java) replaces every match without a flag, and its string
   literals read backslash escapes, so the backslash is doubled. #}
{% macro spark__trim_whitespace(expression) -%}
  {%- set space = cohort_sync.whitespace_class('\\\\x{%X}') -%}
  regexp_replace({{ expression }}, '^{{ space }}+|{{ space }}+$', '')
{%- endmacro %}


{# The White_Space characters as a bracket expression, each written with `escape` (a %-format of its code point). #}
{% macro whitespace_class(escape) -%}
  {%- set code_points = [9, 10, 11, 12, 13, 32, 133, 160, 5760] + (range(8192, 8203) | list)
                        + [8232, 8233, 8239, 8287, 12288] -%}
  {%- set characters = [] -%}
  {%- for code_point in code_points -%}
    {%- do characters.append(escape | format(code_point)) -%}
  {%- endfor -%}
  [{{ characters | join }}]
{%- endmacro %}
