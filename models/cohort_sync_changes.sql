{#
  What must change in Braze: each member who entered a declared cohort since
  the last acknowledged sync (an add) or left it (a remove), in the form the
  cohort is delivered in (delivery, attribute_name), numbered into batches:

  - cohort_import: per cohort, at most var('cohort_sync_batch_size')
    identifiers per batch (a request to the partner cohort endpoint).
    Removes come first, so a batch that mixes both lists removes before adds.
  - attribute: across every attribute cohort, by member: a member's
    changes share a batch, so one /users/track object carries every cohort
    attribute of the member that changed, and no batch holds more than
    var('cohort_sync_users_track_batch_size') members (objects). Where two
    members may be one person, those who only leave come first, in batches
    of their own (see `phased`).
    change_number is the member's number.

  A member is held in one form: a cohort whose delivery or attribute
  changed adds every member in the new form and removes them from the old
  one (guarded in cohort_sync_cohorts like any mass removal). A change
  Braze rejected (cohort_sync_rejected_changes) is not planned again: it
  needs its data fixed, not a retry (var cohort_sync_retry_rejected: true
  plans those again).
  Every row carries the plan's id (the dbt invocation that built it): the
  publisher records acknowledged batches per plan, so a plan is never sent
  twice. Rows are stored in (delivery, cohort, batch) order, so the
  publisher's page reads by batch number touch only the pages they need.
  A cohort no longer declared is left alone (its Braze members are kept)
  unless it is listed in var('cohort_sync_clear_cohorts'): then every member
  is removed (guarded in cohort_sync_cohorts like any mass removal).
#}
{%- set batch_size = cohort_sync.batch_size() -%}
{%- set track_batch_size = cohort_sync.users_track_batch_size() -%}
{%- set cleared = cohort_sync.cleared_cohorts() -%}
{%- set retry_rejected = var('cohort_sync_retry_rejected', false) -%}
{%- if retry_rejected not in [true, false] -%}
  {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_retry_rejected' must be true or false, got: " ~ retry_rejected) }}
{%- endif -%}
{%- set form = ['cohort_id', 'delivery', 'attribute_name', 'member_key'] -%}
{%- set members = cohort_sync.member_columns() -%}

with

declared as (
    {{ cohort_sync.declared_cohorts_sql() }}
),

rejected as (
    select distinct
        cohort_id,
        delivery,
        coalesce(attribute_name, '') as attribute_key,
        member_key,
        should_remove
    from {{ source('cohort_sync', 'rejected_changes') }}
    -- a change of a plan (a full resync's has no plan: it changes nothing planned)
    where plan_id is not null
    {%- if retry_rejected %}
        and 1 = 0
    {%- endif %}
),

{#- one full outer join per form finds both: members not yet in Braze in
    this form (adds) and members Braze holds who left the audience, or are
    held in a form the cohort is no longer delivered in (removes). The form
    is part of the join's key, so cohort imports and attribute cohorts are
    compared apart, each row in one join, and numbered apart (below). #}
{%- for part, test in [('imports', "<> 'attribute'"), ('attributes', "= 'attribute'")] %}
{{ part }}_compared as (
    select
        {%- for name in form + members %}
        coalesce(membership.{{ name }}, published.{{ name }}) as {{ name }},
        {%- endfor %}
        membership.member_key is null as should_remove
    from (
        select
            {{ (form + members) | join(',\n            ') }}
        from {{ ref('cohort_sync_membership') }}
        where delivery {{ test }}
    ) as membership
    full outer join (
        select
            cohort_id,
            coalesce(delivery, 'cohort_import') as delivery,
            attribute_name,
            member_key,
            {{ members | join(',\n            ') }}
        from {{ source('cohort_sync', 'published_state') }}
        where coalesce(delivery, 'cohort_import') {{ test }}
            and (cohort_id in (select cohort_id from declared)
            {%- if cleared %}
                or cohort_id in {{ cohort_sync.literal_list(cleared) }}
            {%- endif %})
    ) as published
        on published.cohort_id = membership.cohort_id
        and published.member_key = membership.member_key
        and published.delivery = membership.delivery
        and coalesce(published.attribute_name, '') = coalesce(membership.attribute_name, '')
    where membership.member_key is null
        or published.member_key is null
),

{{ part }}_to_send as (
    select compared.*
    from {{ part }}_compared as compared
    left join rejected
        on rejected.cohort_id = compared.cohort_id
        and rejected.delivery = compared.delivery
        and rejected.attribute_key = coalesce(compared.attribute_name, '')
        and rejected.member_key = compared.member_key
        and rejected.should_remove = compared.should_remove
    where rejected.member_key is null
),
{% endfor %}

{#- cohort imports: per cohort, removes first #}
imports as (
    select
        imports_to_send.*,
        0 as phase,
        row_number() over (partition by cohort_id, delivery order by should_remove desc, member_key) as phase_number,
        cast(null as {{ dbt.type_bigint() }}) as leaving_members
    from imports_to_send
),

{#- attribute changes may come in two phases: first the members who only
    leave (their attributes set to null), then the others. One person can be
    two members of an attribute when its changes mix identifier types (a
    lead known by phone who signed up, now an external id) or use aliases
    (a profile may have several): then the null sent under one identifier
    must reach Braze before the true sent under the other, or it would
    clear it. External ids, Braze ids, emails and phones of one type each
    name one profile: such changes need no phases, and a run's leavers and
    joiners share requests. The publisher sends every batch without adds,
    acknowledged, before the others.
    Only attribute changes go through these windows (a window costs a pass
    over every row it is computed on, whatever a case makes of it). #}
mixed as (
    select
        attributes_to_send.*,
        case
            when min(identifier_type) over (partition by attribute_name)
                    <> max(identifier_type) over (partition by attribute_name)
                or identifier_type = 'alias'
                then 1
            else 0
        end as may_share_a_profile
    from attributes_to_send
),

phased as (
    select
        mixed.*,
        case
            when max(case when should_remove then 0 else 1 end) over (partition by member_key) = 1 then 2
            when max(may_share_a_profile) over (partition by member_key) = 1 then 1
            else 2
        end as phase
    from mixed
),

ranked as (
    select
        phased.*,
        dense_rank() over (partition by phase order by member_key) as phase_number
    from phased
),

numbered as (
    select
        {%- for name in form + members + ['should_remove', 'phase', 'phase_number'] %}
        {{ name }},
        {%- endfor %}
        max(case when phase = 1 then phase_number end) over () as leaving_members
    from ranked
    union all
    select
        {%- for name in form + members + ['should_remove', 'phase', 'phase_number', 'leaving_members'] %}
        {{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from imports
),

final as (
    select
        cast({{ cohort_sync.quoted_literal(invocation_id) }} as {{ dbt.type_string() }}) as plan_id,
        cohort_id,
        delivery,
        attribute_name,
        case
            when phase = 1 then {{ cohort_sync.batch_number('phase_number', track_batch_size) }}
            when phase = 2 then {{ cohort_sync.batch_number('phase_number', track_batch_size) }}
                + coalesce({{ cohort_sync.batch_number('leaving_members', track_batch_size) }}, 0)
            else {{ cohort_sync.batch_number('phase_number', batch_size) }}
        end as batch_number,
        case when phase = 2 then phase_number + coalesce(leaving_members, 0) else phase_number end as change_number,
        should_remove,
        member_key,
        {{ members | join(',\n        ') }}
    from numbered
)

select * from final
order by delivery, cohort_id, batch_number, change_number
