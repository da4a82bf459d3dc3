{#
  What must change in Braze: each member who entered a declared cohort since
  the last acknowledged sync (an add) or left it (a remove), numbered into
  batches of at most var('cohort_sync_batch_size') identifiers per cohort.
  Removes come first, so a batch that mixes both lists removes before adds.
  Every row carries the plan's id (the dbt invocation that built it): the
  publisher records acknowledged batches per plan, so a plan is never sent
  twice. Rows are stored in (cohort, batch) order, so the publisher's page
  reads by batch number touch only the pages they need.
  A cohort no longer declared is left alone (its Braze members are kept)
  unless it is listed in var('cohort_sync_clear_cohorts'): then every member
  is removed (guarded in cohort_sync_cohorts like any mass removal).
#}
{%- set batch_size = cohort_sync.batch_size() -%}
{%- set cleared = cohort_sync.cleared_cohorts() -%}

with

declared as (
    {{ cohort_sync.declared_cohorts_sql() }}
),

membership as (
    select
        cohort_id,
        member_key,
        identifier_type,
        external_id,
        alias_name,
        alias_label,
        device_id
    from {{ ref('cohort_sync_membership') }}
),

published as (
    select
        cohort_id,
        member_key,
        identifier_type,
        external_id,
        alias_name,
        alias_label,
        device_id
    from {{ source('cohort_sync', 'published_state') }}
    where cohort_id in (select cohort_id from declared)
    {%- if cleared %}
        or cohort_id in {{ cohort_sync.literal_list(cleared) }}
    {%- endif %}
),

additions as (
    select
        membership.cohort_id,
        membership.member_key,
        membership.identifier_type,
        membership.external_id,
        membership.alias_name,
        membership.alias_label,
        membership.device_id,
        false as should_remove
    from membership
    left join published
        on published.cohort_id = membership.cohort_id
        and published.member_key = membership.member_key
    where published.member_key is null
),

removals as (
    select
        published.cohort_id,
        published.member_key,
        published.identifier_type,
        published.external_id,
        published.alias_name,
        published.alias_label,
        published.device_id,
        true as should_remove
    from published
    left join membership
        on membership.cohort_id = published.cohort_id
        and membership.member_key = published.member_key
    where membership.member_key is null
),

all_changes as (
    select * from additions
    union all
    select * from removals
),

numbered as (
    select
        all_changes.*,
        row_number() over (
            partition by cohort_id
            order by should_remove desc, member_key
        ) as change_number
    from all_changes
),

final as (
    select
        cast({{ cohort_sync.quoted_literal(invocation_id) }} as {{ dbt.type_string() }}) as plan_id,
        cohort_id,
        {{ cohort_sync.batch_number('change_number', batch_size) }} as batch_number,
        change_number,
        should_remove,
        member_key,
        identifier_type,
        external_id,
        alias_name,
        alias_label,
        device_id
    from numbered
)

select * from final
order by cohort_id, batch_number, change_number
