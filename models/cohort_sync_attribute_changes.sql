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

rows_read as (
    select *
    from {{ ref('cohort_sync_attribute_rows') }}
    where member_key is not null
),

current_values as (
    select distinct
        sync_id,
        member_key,
        attribute_name,
        value_type,
        value_text,
        value_hash,
        data_points
    from rows_read
    where reject_reason is null and not is_null
),

present as (
    select distinct
        sync_id,
        member_key
    from rows_read
),

held_back as (
    select distinct
        sync_id,
        member_key,
        attribute_name
    from rows_read
    where reject_reason is not null
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

compared as (
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

rejected as (
    select distinct
        cohort_id as sync_id,
        member_key,
        attribute_name,
        coalesce(value_hash, '') as value_key
    from {{ source('cohort_sync', 'rejected_changes') }}
    where delivery = 'profile'
        and plan_id is not null
    {%- if retry_rejected %}
        and 1 = 0
    {%- endif %}
),

to_send as (
    select planned.*
    from planned
    left join rejected
        on rejected.sync_id = planned.sync_id
        and rejected.member_key = planned.member_key
        and rejected.attribute_name = planned.attribute_name
        and rejected.value_key = coalesce(planned.value_hash, '')
    where rejected.member_key is null
),

numbered as (
    select
        to_send.*,
        dense_rank() over (partition by sync_id order by member_key) as member_number
    from to_send
),

final as (
    select
        cast({{ cohort_sync.quoted_literal(invocation_id) }} as {{ string }}) as plan_id,
        sync_id,
        {{ cohort_sync.batch_number('member_number', track_batch_size) }} as batch_number,
        member_number as change_number,
        member_key,
        attribute_name,
        change_kind,
        change_kind = 'unset' as should_remove,
        value_type,
        value_text,
        value_hash,
        data_points
    from numbered
)

select * from final
order by sync_id, batch_number, member_key, attribute_name
