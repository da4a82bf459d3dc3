{#
  The declared cohorts, and whether Braze already knows each one under its
  declared name: 'new' and 'renamed' cohorts need the name endpoint first.
#}
{%- set cohorts = cohort_sync.declared_cohorts() -%}
{%- set string = dbt.type_string() -%}

with

declared as (
    {%- for cohort in cohorts %}
    select
        cast({{ cohort_sync.quoted_literal(cohort.cohort_id) }} as {{ string }}) as cohort_id,
        cast({{ cohort_sync.quoted_literal(cohort.name) }} as {{ string }}) as cohort_name,
        cast({{ cohort_sync.quoted_literal(cohort.model) }} as {{ string }}) as model_name
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        cast(null as {{ string }}) as cohort_id,
        cast(null as {{ string }}) as cohort_name,
        cast(null as {{ string }}) as model_name
    where 1 = 0
    {%- endfor %}
),

braze_names as (
    select
        cohort_id,
        cohort_name
    from {{ source('cohort_sync', 'published_cohorts') }}
),

final as (
    select
        declared.cohort_id,
        declared.cohort_name,
        declared.model_name,
        braze_names.cohort_name as braze_cohort_name,
        case
            when braze_names.cohort_id is null then 'new'
            when braze_names.cohort_name = declared.cohort_name then 'known'
            else 'renamed'
        end as name_status
    from declared
    left join braze_names
        on braze_names.cohort_id = declared.cohort_id
)

select * from final
