{#
  The removal guard's numbers, as the parts of a dbt.concat in
  cohort_sync_cohorts: "<planned_removes><of><published_members><noun>
  (<share>%), more than the <max_share>% limit". `of` and `noun` are SQL
  string literals.
#}
{% macro removal_share_text(max_share, of, noun) %}
  {%- set string = dbt.type_string() -%}
  {{ return(["cast(planned_removes as " ~ string ~ ")", of, "cast(published_members as " ~ string ~ ")", noun,
             "cast(round(100.0 * planned_removes / published_members, 1) as " ~ string ~ ")",
             "'%), more than the " ~ ('%g' | format(max_share * 100)) ~ "% limit'"]) }}
{% endmacro %}
