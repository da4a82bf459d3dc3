{# Audience rows that cannot be sent, with the reason; never sent, never dropped silently. #}
with

rejected as (
    select
        cohort_id,
        reject_reason,
        raw_external_id,
        raw_alias_name,
        raw_alias_label,
        raw_device_id
    from {{ ref('cohort_sync_audience_rows') }}
    where reject_reason is not null
),

final as (
    select
        cohort_id,
        reject_reason,
        raw_external_id as external_id,
        raw_alias_name as alias_name,
        raw_alias_label as alias_label,
        raw_device_id as device_id,
        count(*) as source_rows
    from rejected
    group by
        cohort_id,
        reject_reason,
        raw_external_id,
        raw_alias_name,
        raw_alias_label,
        raw_device_id
)

select * from final
