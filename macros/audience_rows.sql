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


{#
  The CTEs that identify the rows of `source` (a CTE with cohort_id,
  delivery, attribute_name and the raw_<identifier> columns of
  identifier_columns(), as strings), named with `prefix`: the last,
  <prefix>identified, holds each row's identifier type, member key and
  identifier columns, or its reject reason, with the `passthrough` columns
  of the source. The rules are those of cohort_sync_audience_rows.
#}
{% macro identify_ctes(source, prefix='', passthrough=[]) %}
  {%- set max_length = var('cohort_sync_max_identifier_length', 512) -%}
  {%- set string = dbt.type_string() -%}
  {%- set identifiers = cohort_sync.identifier_columns() %}
{{ prefix }}trimmed as (
    select
        {{ source }}.*,
        {%- for name in identifiers %}
        nullif({{ cohort_sync.trim_whitespace('raw_' ~ name) }}, '') as trimmed_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ source }}
),

{{ prefix }}normalised as (
    select
        cohort_id,
        delivery,
        attribute_name,
        {%- for name in passthrough %}
        {{ name }},
        {%- endfor %}
        {%- for name in identifiers %}
        raw_{{ name }},
        {%- endfor %}
        trimmed_external_id as external_id,
        trimmed_alias_name as alias_name,
        trimmed_alias_label as alias_label,
        trimmed_braze_id as braze_id,
        lower(trimmed_email) as email,
        nullif(
            replace(replace(replace(replace(replace(trimmed_phone, ' ', ''), '-', ''), '.', ''), '(', ''), ')', ''),
            ''
        ) as phone,
        trimmed_device_id as device_id
    from {{ prefix }}trimmed
),

{{ prefix }}classified as (
    select
        {{ prefix }}normalised.*,
        case
            when external_id is not null then 'external_id'
            when alias_name is not null and alias_label is not null then 'alias'
            when delivery = 'attribute' and braze_id is not null then 'braze_id'
            when delivery = 'attribute' and email is not null then 'email'
            when delivery = 'attribute' and phone is not null then 'phone'
            when delivery = 'cohort_import' and device_id is not null then 'device_id'
        end as identifier_type
    from {{ prefix }}normalised
),

{{ prefix }}identified as (
    select
        cohort_id,
        delivery,
        attribute_name,
        {%- for name in passthrough %}
        {{ name }},
        {%- endfor %}
        identifier_type,
        case identifier_type
            when 'external_id' then {{ dbt.concat(["'external_id:'", "external_id"]) }}
            when 'alias' then {{ dbt.concat([
                "'alias:'",
                "cast(" ~ dbt.length("alias_name") ~ " as " ~ string ~ ")",
                "':'", "alias_name", "':'", "alias_label"]) }}
            when 'braze_id' then {{ dbt.concat(["'braze_id:'", "braze_id"]) }}
            when 'email' then {{ dbt.concat(["'email:'", "email"]) }}
            when 'phone' then {{ dbt.concat(["'phone:'", "phone"]) }}
            when 'device_id' then {{ dbt.concat(["'device_id:'", "device_id"]) }}
        end as member_key,
        case when identifier_type = 'external_id' then external_id end as external_id,
        case when identifier_type = 'alias' then alias_name end as alias_name,
        case when identifier_type = 'alias' then alias_label end as alias_label,
        case when identifier_type = 'braze_id' then braze_id end as braze_id,
        case when identifier_type = 'email' then email end as email,
        case when identifier_type = 'phone' then phone end as phone,
        case when identifier_type = 'device_id' then device_id end as device_id,
        case
            when identifier_type is null and alias_name is not null and alias_label is null
                then 'alias_name_without_alias_label'
            when identifier_type is null and alias_label is not null and alias_name is null
                then 'alias_label_without_alias_name'
            when identifier_type is null and delivery = 'attribute' and device_id is not null
                then 'device_id_not_addressable'
            when identifier_type is null and delivery = 'cohort_import'
                and (braze_id is not null or email is not null or phone is not null)
                then 'no_cohort_import_identifier'
            when identifier_type is null then 'no_identifier'
            when identifier_type = 'email' and (email not like '%_@_%' or email like '%@%@%')
                then 'invalid_email'
            when identifier_type = 'phone' and (
                    substring(phone, 1, 1) <> '+'
                    or {{ dbt.length("phone") }} < 3
                    or {{ dbt.length("phone") }} > 16
                    or substring(phone, 2, 1) = '0'
                    or translate(substring(phone, 2), '0123456789', '') <> '')
                then 'invalid_phone'
            {%- for name in ['external_id', 'braze_id', 'email', 'phone', 'device_id'] %}
            when identifier_type = '{{ name }}' and {{ dbt.length(name) }} > {{ max_length }} then 'identifier_too_long'
            {%- endfor %}
            when identifier_type = 'alias'
                and ({{ dbt.length("alias_name") }} > {{ max_length }} or {{ dbt.length("alias_label") }} > {{ max_length }})
                then 'identifier_too_long'
        end as reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ prefix }}classified
)
{%- endmacro %}
