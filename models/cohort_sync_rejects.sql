{# Audience rows that cannot be sent, with the reason; never sent, never dropped silently. #}
{%- set identifiers = cohort_sync.identifier_columns() %}

with

rejected as (
    select
        cohort_id,
        reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ ref('cohort_sync_audience_rows') }}
    where reject_reason is not null
),

final as (
    select
        cohort_id,
        reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }} as {{ name }},
        {%- endfor %}
        count(*) as source_rows
    from rejected
    group by
        cohort_id,
        reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
)

select * from final
