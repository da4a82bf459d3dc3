{# Who is in which cohort now: one row per cohort and member. #}
with

accepted as (
    select
        cohort_id,
        member_key,
        identifier_type,
        external_id,
        alias_name,
        alias_label,
        device_id
    from {{ ref('cohort_sync_audience_rows') }}
    where reject_reason is null
),

final as (
    select
        cohort_id,
        member_key,
        identifier_type,
        external_id,
        alias_name,
        alias_label,
        device_id,
        count(*) as source_rows
    from accepted
    group by
        cohort_id,
        member_key,
        identifier_type,
        external_id,
        alias_name,
        alias_label,
        device_id
)

select * from final
