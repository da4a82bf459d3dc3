{#
  Every row of every declared audience, normalised and classified: which
  identifier the row is sent under, its member key, or why it cannot be
  sent. Membership and rejects both read from here.

  Rules (README, "Audience contract"):
  - identifiers are cast to strings and trimmed of surrounding whitespace
    (every Unicode White_Space character: macros/trim_whitespace.sql);
    empty after trimming = absent;
  - precedence: external_id, then alias (alias_name and alias_label both
    present), then device_id; the other identifiers of the row are not sent;
  - a row with no usable identifier, or whose chosen identifier is longer
    than var('cohort_sync_max_identifier_length'), is rejected with a reason.
#}
{%- set cohorts = cohort_sync.declared_cohorts() -%}
{%- set max_length = var('cohort_sync_max_identifier_length', 512) -%}
{%- set string = dbt.type_string() -%}

with

raw_rows as (
    {%- for cohort in cohorts %}
    {{ cohort_sync.audience_rows(cohort) }}
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        cast(null as {{ string }}) as cohort_id,
        cast(null as {{ string }}) as raw_external_id,
        cast(null as {{ string }}) as raw_alias_name,
        cast(null as {{ string }}) as raw_alias_label,
        cast(null as {{ string }}) as raw_device_id
    where 1 = 0
    {%- endfor %}
),

normalised as (
    select
        cohort_id,
        raw_external_id,
        raw_alias_name,
        raw_alias_label,
        raw_device_id,
        nullif({{ cohort_sync.trim_whitespace('raw_external_id') }}, '') as external_id,
        nullif({{ cohort_sync.trim_whitespace('raw_alias_name') }}, '') as alias_name,
        nullif({{ cohort_sync.trim_whitespace('raw_alias_label') }}, '') as alias_label,
        nullif({{ cohort_sync.trim_whitespace('raw_device_id') }}, '') as device_id
    from raw_rows
),

classified as (
    select
        normalised.*,
        case
            when external_id is not null then 'external_id'
            when alias_name is not null and alias_label is not null then 'alias'
            when device_id is not null then 'device_id'
        end as identifier_type
    from normalised
),

final as (
    select
        cohort_id,
        identifier_type,
        case identifier_type
            when 'external_id' then {{ dbt.concat(["'external_id:'", "external_id"]) }}
            when 'alias' then {{ dbt.concat([
                "'alias:'",
                "cast(" ~ dbt.length("alias_name") ~ " as " ~ string ~ ")",
                "':'", "alias_name", "':'", "alias_label"]) }}
            when 'device_id' then {{ dbt.concat(["'device_id:'", "device_id"]) }}
        end as member_key,
        case when identifier_type = 'external_id' then external_id end as external_id,
        case when identifier_type = 'alias' then alias_name end as alias_name,
        case when identifier_type = 'alias' then alias_label end as alias_label,
        case when identifier_type = 'device_id' then device_id end as device_id,
        case
            when identifier_type is null and alias_name is not null then 'alias_name_without_alias_label'
            when identifier_type is null and alias_label is not null then 'alias_label_without_alias_name'
            when identifier_type is null then 'no_identifier'
            when identifier_type = 'external_id' and {{ dbt.length("external_id") }} > {{ max_length }} then 'identifier_too_long'
            when identifier_type = 'alias'
                and ({{ dbt.length("alias_name") }} > {{ max_length }} or {{ dbt.length("alias_label") }} > {{ max_length }})
                then 'identifier_too_long'
            when identifier_type = 'device_id' and {{ dbt.length("device_id") }} > {{ max_length }} then 'identifier_too_long'
        end as reject_reason,
        raw_external_id,
        raw_alias_name,
        raw_alias_label,
        raw_device_id
    from classified
)

select * from final
