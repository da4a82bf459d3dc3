{#
  Audience rows, and attribute sync values, that cannot be sent, with the
  reason; never sent, never dropped silently. cohort_id is the cohort's or
  the attribute sync's id; attribute_name is null for a cohort's rows and
  for a sync's rows rejected whole (their identifier, or a conflict).
#}
{%- set identifiers = cohort_sync.identifier_columns() %}

with

rejected as (
    select
        cohort_id,
        cast(null as {{ dbt.type_string() }}) as attribute_name,
        reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ ref('cohort_sync_audience_rows') }}
    where reject_reason is not null
    union all
    select
        sync_id as cohort_id,
        case when rejects_row then null else attribute_name end as attribute_name,
        reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ ref('cohort_sync_attribute_rows') }}
    -- a row's own reject (its identifier, a conflict) once per model row; a value's once per value
    where reject_reason is not null and (counts_row or not rejects_row)
),

final as (
    select
        cohort_id,
        attribute_name,
        reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }} as {{ name }},
        {%- endfor %}
        count(*) as source_rows
    from rejected
    group by
        cohort_id,
        attribute_name,
        reject_reason,
        {%- for name in identifiers %}
        raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
)

select * from final
