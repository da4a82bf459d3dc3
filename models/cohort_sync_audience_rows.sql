{#
  Every row of every declared audience, normalised and classified: which
  identifier the row is sent under, its member key, or why it cannot be
  sent. Membership and rejects both read from here.

  Rules (README, "Audience contract"):
  - identifiers are cast to strings and trimmed of surrounding whitespace
    (every Unicode White_Space character: macros/trim_whitespace.sql);
    empty after trimming = absent; emails are lowercased; phone numbers
    lose spaces, hyphens, dots and parentheses and must then be E.164
    (+ and 2 to 15 digits, the first not 0);
  - precedence: external_id, then alias (alias_name and alias_label both
    present), then braze_id, email, phone, device_id, skipping those the
    cohort's delivery cannot address (the partner cohort import takes
    external ids, aliases and device ids; /users/track every one but
    device ids); the other identifiers of the row are not sent;
  - a row with no identifier its delivery can address, a malformed email
    or phone, or a chosen identifier longer than
    var('cohort_sync_max_identifier_length') is rejected with a reason.
#}
{%- set cohorts = cohort_sync.declared_cohorts() -%}
{%- set max_length = var('cohort_sync_max_identifier_length', 512) -%}
{%- set string = dbt.type_string() -%}
{%- set identifiers = cohort_sync.identifier_columns() -%}

with

raw_rows as (
    {%- for cohort in cohorts %}
    {{ cohort_sync.audience_rows(cohort) }}
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        cast(null as {{ string }}) as cohort_id,
        cast(null as {{ string }}) as delivery,
        cast(null as {{ string }}) as attribute_name,
        {%- for name in identifiers %}
        cast(null as {{ string }}) as raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    where 1 = 0
    {%- endfor %}
),

trimmed as (
    select
        raw_rows.*,
        {%- for name in identifiers %}
        nullif({{ cohort_sync.trim_whitespace('raw_' ~ name) }}, '') as trimmed_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from raw_rows
),

normalised as (
    select
        cohort_id,
        delivery,
        attribute_name,
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
    from trimmed
),

classified as (
    select
        normalised.*,
        case
            when external_id is not null then 'external_id'
            when alias_name is not null and alias_label is not null then 'alias'
            when delivery = 'attribute' and braze_id is not null then 'braze_id'
            when delivery = 'attribute' and email is not null then 'email'
            when delivery = 'attribute' and phone is not null then 'phone'
            when delivery = 'cohort_import' and device_id is not null then 'device_id'
        end as identifier_type
    from normalised
),

final as (
    select
        cohort_id,
        delivery,
        attribute_name,
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
    from classified
)

select * from final
