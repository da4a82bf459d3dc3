{#
  What each attribute sync must write to Braze: per user and attribute, the
  values that differ from what Braze acknowledged (the compact state
  cohort_sync_attribute_state keeps each value's hash), numbered into
  /users/track batches by user, so a user's changes are one object.

  change_kind:
  - new: a value Braze has not acknowledged for the user (a new user sends
    all their values);
  - changed: a value whose hash differs from the acknowledged one;
  - unset: a value to remove (sent as null): the model's value is null and
    the sync's `nulls` is unset, or the user left the model and its
    `on_leave` is unset.

  Held back, never planned: the values of cohort_sync_attribute_rows with a
  reject reason (the acknowledged value stays as it is), and changes Braze
  rejected for that same value (cohort_sync_rejected_changes; var
  cohort_sync_retry_rejected: true plans them again). An attribute no longer
  among a sync's is left as Braze has it. Every row carries the plan's id;
  data_points is what writing the value costs. The identifier is the member
  key's (the publisher reads it from there: a user who left has no row).
#}
{#- with nothing declared it is empty: a view costs nothing to build (a table costs seconds on Spark) #}
{{ config(materialized='table' if var('cohort_sync_attribute_syncs', none) else 'view') }}
{%- set string = dbt.type_string() -%}
{%- set syncs = cohort_sync.declared_attribute_syncs() -%}
{%- set track_batch_size = cohort_sync.users_track_batch_size() -%}
{%- set retry_rejected = var('cohort_sync_retry_rejected', false) -%}
{%- set keys = ['sync_id', 'member_key', 'attribute_name'] -%}
{#- each sync's attributes are read from its model's columns, once built #}
{%- for sync in syncs %}
-- depends_on: {{ ref(sync.package, sync.model) }}
{%- endfor %}

with

sync_attributes as (
    {%- set selects = [] %}
    {%- for sync in syncs %}
    {%- for attribute in cohort_sync.sync_columns(sync).attributes %}
    {%- do selects.append("select cast(" ~ cohort_sync.quoted_literal(sync.sync_id) ~ " as " ~ string ~ ") as sync_id, cast("
        ~ cohort_sync.quoted_literal(attribute.name) ~ " as " ~ string ~ ") as attribute_name, "
        ~ cohort_sync.attribute_data_points(attribute.name) ~ " as data_points, cast('" ~ sync.nulls ~ "' as " ~ string
        ~ ") as nulls, cast('" ~ sync.on_leave ~ "' as " ~ string ~ ") as on_leave") %}
    {%- endfor %}
    {%- endfor %}
    {%- if selects %}
    {{ selects | join('\n    union all\n    ') }}
    {%- else %}
    select
        cast(null as {{ string }}) as sync_id,
        cast(null as {{ string }}) as attribute_name,
        cast(null as {{ dbt.type_int() }}) as data_points,
        cast(null as {{ string }}) as nulls,
        cast(null as {{ string }}) as on_leave
    where 1 = 0
    {%- endif %}
),

{#- the values that can be sent; a user's rows agree on them (rows that
    disagree are rejected as conflicting_rows), so a value repeated by
    several rows is compared as one (`compared`) #}
current_values as (
    select
        sync_id,
        member_key,
        attribute_name,
        value_type,
        value_text,
        value_hash
    from {{ ref('cohort_sync_attribute_rows') }}
    where member_key is not null and reject_reason is null and not is_null
),

{#- counts_row marks one value of each model row #}
present as (
    select distinct
        sync_id,
        member_key
    from {{ ref('cohort_sync_attribute_rows') }}
    where member_key is not null and counts_row
),

held_back as (
    select distinct
        sync_id,
        member_key,
        attribute_name
    from {{ ref('cohort_sync_attribute_rows') }}
    where member_key is not null and reject_reason is not null
),

acknowledged as (
    select
        state.sync_id,
        state.member_key,
        state.attribute_name,
        state.value_hash
    from {{ source('cohort_sync', 'attribute_state') }} as state
    inner join sync_attributes
        on sync_attributes.sync_id = state.sync_id
        and sync_attributes.attribute_name = state.attribute_name
),

compared_values as (
    select
        {%- for name in keys %}
        coalesce(current_values.{{ name }}, acknowledged.{{ name }}) as {{ name }},
        {%- endfor %}
        current_values.value_type,
        current_values.value_text,
        current_values.value_hash,
        case
            when acknowledged.member_key is null then 'new'
            when current_values.member_key is null then 'unset'
            else 'changed'
        end as change_kind
    from current_values
    full outer join acknowledged
        on acknowledged.sync_id = current_values.sync_id
        and acknowledged.member_key = current_values.member_key
        and acknowledged.attribute_name = current_values.attribute_name
    where acknowledged.member_key is null
        or current_values.member_key is null
        or acknowledged.value_hash <> current_values.value_hash
),

{#- one value per user and attribute: rows that agree canonically may
    still differ in text (JSON keys in another order): either text is it.
    Grouped once compared, so only the values that differ are. #}
compared as (
    select
        {%- for name in keys %}
        {{ name }},
        {%- endfor %}
        value_type,
        min(value_text) as value_text,
        value_hash,
        change_kind
    from compared_values
    group by {{ keys | join(', ') }}, value_type, value_hash, change_kind
),

{#- an acknowledged value with no current one is unset only as declared:
    the user is in the model with a null (nulls: unset), or left it
    (on_leave: unset); a value held back by a reject stays #}
planned as (
    select
        compared.*,
        sync_attributes.data_points
    from compared
    inner join sync_attributes
        on sync_attributes.sync_id = compared.sync_id
        and sync_attributes.attribute_name = compared.attribute_name
    left join present
        on present.sync_id = compared.sync_id
        and present.member_key = compared.member_key
    left join held_back
        on held_back.sync_id = compared.sync_id
        and held_back.member_key = compared.member_key
        and held_back.attribute_name = compared.attribute_name
    where compared.change_kind <> 'unset'
        or (held_back.member_key is null and (
            (present.member_key is not null and sync_attributes.nulls = 'unset')
            or (present.member_key is null and sync_attributes.on_leave = 'unset')))
),

{#- Braze rejects whole objects: a user's changes are held back while they
    would make exactly the object Braze rejected (the same values of the
    same attributes); once any of them differs, all are planned again #}
rejected as (
    select
        cohort_id as sync_id,
        member_key,
        attribute_name,
        coalesce(value_hash, '') as value_key,
        run_id,
        batch_number
    from {{ source('cohort_sync', 'rejected_changes') }}
    where delivery = 'profile'
        and plan_id is not null
    {%- if retry_rejected %}
        and 1 = 0
    {%- endif %}
),

rejected_objects as (
    select
        sync_id,
        member_key,
        run_id,
        batch_number,
        count(*) as object_values
    from rejected
    group by sync_id, member_key, run_id, batch_number
),

planned_users as (
    select
        sync_id,
        member_key,
        count(*) as planned_values
    from planned
    group by sync_id, member_key
),

rejected_again as (
    select
        rejected.sync_id,
        rejected.member_key,
        rejected.run_id,
        rejected.batch_number,
        count(*) as matching_values
    from planned
    inner join rejected
        on rejected.sync_id = planned.sync_id
        and rejected.member_key = planned.member_key
        and rejected.attribute_name = planned.attribute_name
        and rejected.value_key = coalesce(planned.value_hash, '')
    group by rejected.sync_id, rejected.member_key, rejected.run_id, rejected.batch_number
),

held_users as (
    select distinct
        rejected_again.sync_id,
        rejected_again.member_key
    from rejected_again
    inner join rejected_objects
        on rejected_objects.sync_id = rejected_again.sync_id
        and rejected_objects.member_key = rejected_again.member_key
        and rejected_objects.run_id = rejected_again.run_id
        and rejected_objects.batch_number = rejected_again.batch_number
    inner join planned_users
        on planned_users.sync_id = rejected_again.sync_id
        and planned_users.member_key = rejected_again.member_key
    where rejected_again.matching_values = rejected_objects.object_values
        and planned_users.planned_values = rejected_objects.object_values
),

to_send as (
    select
        planned.*,
        planned.change_kind = 'unset' as should_remove,
        {{ dbt.split_part('planned.member_key', "':'", 1) }} as identifier_type
    from planned
    left join held_users
        on held_users.sync_id = planned.sync_id
        and held_users.member_key = planned.member_key
    where held_users.member_key is null
),

{#- as for attribute cohorts (cohort_sync_changes, `phased`): when a sync's
    changes mix identifier types or use aliases, two users may be one
    person (a phone lead who signed up), and an unset sent under one
    identifier must reach Braze before the values sent under the other. The
    users who only unset then come first, in batches of their own, which
    the publisher sends, acknowledged, before the others. #}
phased as (
    select
        to_send.*,
        case
            when max(case when should_remove then 0 else 1 end) over (partition by sync_id, member_key) = 1 then 2
            when min(identifier_type) over (partition by sync_id) <> max(identifier_type) over (partition by sync_id)
                or max(case when identifier_type = 'alias' then 1 else 0 end) over (partition by sync_id) = 1
                then 1
            else 2
        end as phase
    from to_send
),

numbered as (
    select
        phased.*,
        dense_rank() over (partition by sync_id, phase order by member_key) as phase_number
    from phased
),

counted as (
    select
        numbered.*,
        max(case when phase = 1 then phase_number end) over (partition by sync_id) as leaving_users
    from numbered
),

final as (
    select
        cast({{ cohort_sync.quoted_literal(invocation_id) }} as {{ string }}) as plan_id,
        sync_id,
        case
            when phase = 1 then {{ cohort_sync.batch_number('phase_number', track_batch_size) }}
            else {{ cohort_sync.batch_number('phase_number', track_batch_size) }}
                + coalesce({{ cohort_sync.batch_number('leaving_users', track_batch_size) }}, 0)
        end as batch_number,
        case when phase = 1 then phase_number else phase_number + coalesce(leaving_users, 0) end as change_number,
        member_key,
        attribute_name,
        change_kind,
        should_remove,
        value_type,
        value_text,
        value_hash,
        data_points,
        {{ cohort_sync.attribute_json('attribute_name', 'value_type', 'value_text', 'should_remove') }} as value_json,
        {#- (a sync cannot send email or phone as an attribute while it is an identifier: macros/declared_syncs.sql) #}
        {{ cohort_sync.member_identifier_json('member_key') }} as identifier_json
    from counted
)

select * from final
order by sync_id, batch_number, member_key, attribute_name
