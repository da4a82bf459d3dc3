{# Who is in which cohort now, and in which form Braze holds it (delivery, attribute): one row per cohort and member. #}
{%- set columns = ['cohort_id', 'delivery', 'attribute_name', 'member_key'] + cohort_sync.member_columns() %}

with

accepted as (
    select
        {{ columns | join(',\n        ') }}
    from {{ ref('cohort_sync_audience_rows') }}
    where reject_reason is null
),

final as (
    select
        {{ columns | join(',\n        ') }},
        count(*) as source_rows
    from accepted
    group by
        {{ columns | join(',\n        ') }}
)

select * from final
