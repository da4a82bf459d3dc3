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

compared as (
    -- one full outer join finds both: members not yet in Braze (adds) and
    -- members Braze holds who left the audience (removes)
    select
        coalesce(membership.cohort_id, published.cohort_id) as cohort_id,
        coalesce(membership.member_key, published.member_key) as member_key,
        coalesce(membership.identifier_type, published.identifier_type) as identifier_type,
        coalesce(membership.external_id, published.external_id) as external_id,
        coalesce(membership.alias_name, published.alias_name) as alias_name,
        coalesce(membership.alias_label, published.alias_label) as alias_label,
        coalesce(membership.device_id, published.device_id) as device_id,
        membership.member_key is null as should_remove
    from membership
    full outer join published
        on published.cohort_id = membership.cohort_id
        and published.member_key = membership.member_key
    where membership.member_key is null
        or published.member_key is null
),

numbered as (
    select
        compared.*,
        row_number() over (
            partition by cohort_id
            order by should_remove desc, member_key
        ) as change_number
    from compared
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
