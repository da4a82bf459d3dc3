{#
  One row per cohort declared now, or no longer declared while Braze still
  holds members of it (published before and not cleared), and one per
  attribute sync (delivery 'profile', cohort_id its sync id), with the plan
  for this run and its guard verdict:

  - action: 'publish' (declared), 'clear' (no longer declared, listed in
    var cohort_sync_clear_cohorts: every member is removed) or 'keep' (no
    longer declared: its Braze members are kept, and a test warns);
  - delivery, attribute_name: how the cohort is delivered (cohort_import,
    or attribute: the profile attribute set through /users/track);
  - name_status: 'new' and 'renamed' cohort_import cohorts go through the
    name endpoint; 'unused' for attribute cohorts, which have no name in
    Braze;
  - notify: the cohort's notification recipients, as JSON text (see
    cohort_notify in macros/declared_cohorts.sql);
  - users_track_batch_size: objects per /users/track request (the var), for
    the publisher's full resync;
  - publish_now: listed in var cohort_sync_publish_now (the manual
    trigger): published regardless of its schedule, and a run that has such
    cohorts publishes only them;
  - guard_status: 'blocked' when the plan would empty the cohort, or remove
    more than var cohort_sync_max_removal_share of its published members
    (when at least var cohort_sync_min_removals_to_guard are removed);
    'allowed' when such a cohort is listed in var cohort_sync_allow_removals;
    'ok' otherwise. For an attribute sync the same rules count values:
    published_members are the values Braze holds, planned_adds the values
    written (new or changed), planned_removes the values unset; and a plan
    writing more than the sync's max_data_points is blocked;
  - planned_data_points: what the plan costs in Braze data points (each
    value written or unset, subscription states free; each membership
    change);
  - full_resync_minutes: the declaration's full_resync_every, in minutes;
  - sync_mode: an attribute sync's mode (update or upsert), else null;
  - max_data_points: an attribute sync's limit per run (the publisher also
    holds a full resync to it), else null.
  For an attribute sync, published_members and members_after count values
  (what the guard weighs); its history row's members_after counts users.

  An event sync (delivery 'event', cohort_id its sync id) counts events:
  published_members those the ledger holds, planned_adds those the plan
  sends; it is blocked when the plan would send more than its max_events
  (the replay guard). sync_mode is upsert when it creates users, else
  update; late_events counts the events older than its window that Braze
  never acknowledged (reported, never sent); lookback_minutes,
  event_guarantee (at_least_once or at_most_once) and event_kind (event or
  purchase) are the declaration's. Null for the other rows.
#}
{%- set string = dbt.type_string() -%}
{%- set cleared = cohort_sync.cleared_cohorts() -%}
{#- the syncs' parts are compiled only when syncs of their kind are declared
    (Spark plans every union branch, empty or not); the dependencies stay -#}
{%- set attribute_syncs = cohort_sync.declared_attribute_syncs() | length > 0 -%}
{%- set event_syncs = cohort_sync.declared_event_syncs() | length > 0 -%}
/* depends on: {{ ref('cohort_sync_attribute_changes') }}, {{ ref('cohort_sync_event_changes') }}, {{ ref('cohort_sync_event_rows') }} */
/* depends on: {{ source('cohort_sync', 'attribute_state') }}, {{ source('cohort_sync', 'event_state') }} */
{%- set allowed = cohort_sync.cohort_id_list('cohort_sync_allow_removals') -%}
{%- set publish_now = cohort_sync.cohort_id_list('cohort_sync_publish_now') -%}
{%- set declared_ids = cohort_sync.declared_cohorts() | map(attribute='cohort_id') | list
    + cohort_sync.declared_attribute_syncs() | map(attribute='sync_id') | list
    + cohort_sync.declared_event_syncs() | map(attribute='sync_id') | list -%}
{%- for cohort_id in publish_now if cohort_id not in declared_ids -%}
  {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_publish_now' names '" ~ cohort_id ~ "', which is not declared in cohort_sync_cohorts, cohort_sync_attribute_syncs or cohort_sync_event_syncs") }}
{%- endfor -%}
{%- set max_share = var('cohort_sync_max_removal_share', 0.5) -%}
{%- set min_removals = var('cohort_sync_min_removals_to_guard', 100) -%}
{%- if max_share is not number or max_share < 0 or max_share > 1 -%}
  {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_max_removal_share' must be a number from 0 to 1, got: " ~ max_share) }}
{%- endif -%}
{%- if min_removals is not number or min_removals < 0 -%}
  {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_min_removals_to_guard' must be a whole number of at least 0, got: " ~ min_removals) }}
{%- endif -%}
{#- the removal guard's rule, and its numbers: "<removes><of><held><noun> (<share>%), more than the limit" #}
{%- set removal_over_share = "planned_removes >= " ~ min_removals ~ " and planned_removes > " ~ max_share ~ " * published_members" -%}


with

declared as (
    {{ cohort_sync.declared_cohorts_sql() }}
),

braze_names as (
    select
        cohort_id,
        cohort_name
    from {{ source('cohort_sync', 'published_cohorts') }}
),

published_members as (
    select
        cohort_id,
        max(coalesce(delivery, 'cohort_import')) as delivery,
        max(attribute_name) as attribute_name,
        count(*) as members
    from {{ source('cohort_sync', 'published_state') }}
    group by cohort_id
),

{#- moved: removes from a form the cohort is no longer delivered in (its
    delivery or attribute changed), for the guard's message #}
planned as (
    select
        changes.cohort_id,
        sum(case when changes.should_remove then 0 else 1 end) as planned_adds,
        sum(case when changes.should_remove then 1 else 0 end) as planned_removes,
        sum(case
            when changes.should_remove
                and (changes.delivery <> declared.delivery
                    or coalesce(changes.attribute_name, '') <> coalesce(declared.attribute_name, ''))
                then 1 else 0
        end) as planned_moves,
        count(distinct {{ dbt.concat(["changes.delivery", "':'", "cast(changes.batch_number as " ~ string ~ ")"]) }}) as planned_batches,
        count(*) as planned_data_points
    from {{ ref('cohort_sync_changes') }} as changes
    left join declared on declared.cohort_id = changes.cohort_id
    group by changes.cohort_id
),

{#- A cohort no longer declared has a row while Braze holds members of it:
    once cleared (or published empty), there is nothing to keep or clear. #}
known as (
    select cohort_id from declared
    union
    select cohort_id from published_members
),

combined as (
    select
        known.cohort_id,
        coalesce(declared.cohort_name, braze_names.cohort_name) as cohort_name,
        declared.model_name,
        coalesce(declared.delivery, published_members.delivery) as delivery,
        case when declared.cohort_id is not null then declared.attribute_name else published_members.attribute_name end as attribute_name,
        braze_names.cohort_name as braze_cohort_name,
        case
            when declared.cohort_id is not null then 'publish'
            {%- if cleared %}
            when known.cohort_id in {{ cohort_sync.literal_list(cleared) }} then 'clear'
            {%- endif %}
            else 'keep'
        end as action,
        case
            when coalesce(declared.delivery, published_members.delivery) = 'attribute' then 'unused'
            when braze_names.cohort_id is null then 'new'
            when braze_names.cohort_name = coalesce(declared.cohort_name, braze_names.cohort_name) then 'known'
            else 'renamed'
        end as name_status,
        coalesce(published_members.members, 0) as published_members,
        coalesce(planned.planned_adds, 0) as planned_adds,
        coalesce(planned.planned_removes, 0) as planned_removes,
        coalesce(planned.planned_moves, 0) as planned_moves,
        coalesce(planned.planned_batches, 0) as planned_batches,
        coalesce(planned.planned_data_points, 0) as planned_data_points,
        coalesce(declared.schedule_every, 'every_run') as schedule_every,
        declared.schedule_at,
        declared.schedule_weekday,
        declared.schedule_day,
        declared.schedule_timezone,
        coalesce(declared.notify, '[]') as notify,
        declared.full_resync_minutes,
        cast(null as {{ string }}) as sync_mode,
        cast(null as {{ dbt.type_bigint() }}) as max_data_points
    from known
    left join declared on declared.cohort_id = known.cohort_id
    left join braze_names on braze_names.cohort_id = known.cohort_id
    left join published_members on published_members.cohort_id = known.cohort_id
    left join planned on planned.cohort_id = known.cohort_id
),

judged as (
    select
        combined.*,
        published_members + planned_adds - planned_removes as members_after,
        case
            when planned_removes > 0 and published_members + planned_adds - planned_removes = 0
                then {{ dbt.concat([
                    "'the run would leave the cohort empty (removing all '",
                    "cast(planned_removes as " ~ string ~ ")",
                    "' members)'"]) }}
            when {{ removal_over_share }}
                then {{ dbt.concat(["'the run would remove '"] + cohort_sync.removal_share_text(max_share, "' of '", "' members ('") + [
                    "case when planned_moves > 0 then '; its delivery or attribute changed, so the run moves its members to the new form and removes them from the old one' else '' end"]) }}
        end as guard_reason
    from combined
),

{%- if attribute_syncs %}
{#- attribute syncs: the values Braze holds (the acknowledged state), the
    values the plan writes (planned_adds: new or changed) and unsets
    (planned_removes), judged by the same rules, plus max_data_points #}
declared_syncs as (
    {{ cohort_sync.declared_syncs_sql() }}
),

held_values as (
    select
        sync_id,
        count(*) as held_values
    from {{ source('cohort_sync', 'attribute_state') }}
    group by sync_id
),

planned_values as (
    select
        sync_id,
        sum(case when change_kind = 'new' then 1 else 0 end) as new_values,
        sum(case when change_kind = 'unset' then 0 else 1 end) as written_values,
        sum(case when change_kind = 'unset' then 1 else 0 end) as unset_values,
        sum(data_points) as data_points,
        count(distinct batch_number) as batches
    from {{ ref('cohort_sync_attribute_changes') }}
    group by sync_id
),

syncs_combined as (
    select
        declared_syncs.*,
        coalesce(held_values.held_values, 0) as published_members,
        coalesce(planned_values.new_values, 0) as new_values,
        coalesce(planned_values.written_values, 0) as planned_adds,
        coalesce(planned_values.unset_values, 0) as planned_removes,
        coalesce(planned_values.batches, 0) as planned_batches,
        coalesce(planned_values.data_points, 0) as planned_data_points
    from declared_syncs
    left join held_values on held_values.sync_id = declared_syncs.cohort_id
    left join planned_values on planned_values.sync_id = declared_syncs.cohort_id
),

syncs_judged as (
    select
        cohort_id,
        cohort_name,
        model_name,
        delivery,
        attribute_name,
        cast(null as {{ string }}) as braze_cohort_name,
        'publish' as action,
        'unused' as name_status,
        published_members,
        planned_adds,
        planned_removes,
        planned_batches,
        planned_data_points,
        schedule_every,
        schedule_at,
        schedule_weekday,
        schedule_day,
        schedule_timezone,
        notify,
        full_resync_minutes,
        sync_mode,
        max_data_points,
        published_members + new_values - planned_removes as members_after,
        case
            when max_data_points is not null and planned_data_points > max_data_points
                then {{ dbt.concat([
                    "'the run would write '",
                    "cast(planned_data_points as " ~ string ~ ")",
                    "' data points, more than the sync''s max_data_points of '",
                    "cast(max_data_points as " ~ string ~ ")"]) }}
            when planned_removes > 0 and published_members + new_values - planned_removes = 0
                then {{ dbt.concat([
                    "'the run would unset every value the sync holds in Braze (all '",
                    "cast(planned_removes as " ~ string ~ ")",
                    "')'"]) }}
            when {{ removal_over_share }}
                then {{ dbt.concat(["'the run would unset '"] + cohort_sync.removal_share_text(max_share, "' of the '", "' values the sync holds in Braze ('")) }}
        end as guard_reason
    from syncs_combined
),

{%- endif %}
{%- if event_syncs %}
{#- event syncs: the events the ledger holds, those the plan sends, and
    the late ones (older than the window, never acknowledged) #}
declared_event_syncs as (
    {{ cohort_sync.declared_event_syncs_sql() }}
),

held_events as (
    select
        sync_id,
        count(*) as held_events
    from {{ source('cohort_sync', 'event_state') }}
    group by sync_id
),

planned_events as (
    select
        sync_id,
        count(distinct event_id) as events,
        sum(case when property_number = 0 then data_points else 0 end) as data_points,
        count(distinct batch_number) as batches
    from {{ ref('cohort_sync_event_changes') }}
    group by sync_id
),

late_events as (
    select
        event_rows.sync_id,
        count(distinct event_rows.event_id) as late_events
    from {{ ref('cohort_sync_event_rows') }} as event_rows
    left join {{ source('cohort_sync', 'event_state') }} as ledger
        on ledger.sync_id = event_rows.sync_id
        and ledger.event_id = event_rows.event_id
    where event_rows.window_status = 'late'
        and event_rows.property_number = 0
        and event_rows.reject_reason is null
        and ledger.event_id is null
    group by event_rows.sync_id
),

events_judged as (
    select
        declared_event_syncs.cohort_id,
        declared_event_syncs.cohort_name,
        declared_event_syncs.model_name,
        declared_event_syncs.delivery,
        declared_event_syncs.attribute_name,
        cast(null as {{ string }}) as braze_cohort_name,
        'publish' as action,
        'unused' as name_status,
        coalesce(held_events.held_events, 0) as published_members,
        coalesce(planned_events.events, 0) as planned_adds,
        0 as planned_removes,
        coalesce(planned_events.batches, 0) as planned_batches,
        coalesce(planned_events.data_points, 0) as planned_data_points,
        coalesce(held_events.held_events, 0) + coalesce(planned_events.events, 0) as members_after,
        case
            when coalesce(planned_events.events, 0) > declared_event_syncs.max_events
                then {{ dbt.concat([
                    "'the run would send '",
                    "cast(planned_events.events as " ~ string ~ ")",
                    "' events, more than the sync''s max_events of '",
                    "cast(declared_event_syncs.max_events as " ~ string ~ ")",
                    "' (Braze counts every event sent, and may trigger a Canvas on each)'"]) }}
        end as guard_reason,
        declared_event_syncs.schedule_every,
        declared_event_syncs.schedule_at,
        declared_event_syncs.schedule_weekday,
        declared_event_syncs.schedule_day,
        declared_event_syncs.schedule_timezone,
        declared_event_syncs.notify,
        cast(null as {{ dbt.type_bigint() }}) as full_resync_minutes,
        declared_event_syncs.sync_mode,
        cast(null as {{ dbt.type_bigint() }}) as max_data_points,
        declared_event_syncs.lookback_minutes,
        declared_event_syncs.event_guarantee,
        declared_event_syncs.event_kind,
        coalesce(late_events.late_events, 0) as late_events
    from declared_event_syncs
    left join held_events on held_events.sync_id = declared_event_syncs.cohort_id
    left join planned_events on planned_events.sync_id = declared_event_syncs.cohort_id
    left join late_events on late_events.sync_id = declared_event_syncs.cohort_id
),

{%- endif %}
all_judged as (
    {%- set plan_columns = ['cohort_id', 'cohort_name', 'model_name', 'delivery', 'attribute_name', 'braze_cohort_name',
                            'action', 'name_status', 'published_members', 'planned_adds', 'planned_removes',
                            'planned_batches', 'planned_data_points', 'members_after', 'guard_reason',
                            'schedule_every', 'schedule_at', 'schedule_weekday', 'schedule_day', 'schedule_timezone',
                            'notify', 'full_resync_minutes', 'sync_mode', 'max_data_points'] %}
    {%- set event_columns = ['lookback_minutes', 'event_guarantee', 'event_kind', 'late_events'] %}
    {%- set no_events = "cast(null as " ~ dbt.type_bigint() ~ ") as lookback_minutes, cast(null as " ~ string
        ~ ") as event_guarantee, cast(null as " ~ string ~ ") as event_kind, 0 as late_events" %}
    select {{ plan_columns | join(', ') }}, {{ no_events }} from judged
    {%- if attribute_syncs %}
    union all
    select {{ plan_columns | join(', ') }}, {{ no_events }} from syncs_judged
    {%- endif %}
    {%- if event_syncs %}
    union all
    select {{ (plan_columns + event_columns) | join(', ') }} from events_judged
    {%- endif %}
),

final as (
    select
        cohort_id,
        cohort_name,
        model_name,
        delivery,
        attribute_name,
        braze_cohort_name,
        action,
        name_status,
        published_members,
        planned_adds,
        planned_removes,
        planned_batches,
        planned_data_points,
        members_after,
        case
            when action = 'keep' or guard_reason is null then 'ok'
            {%- if allowed %}
            when cohort_id in {{ cohort_sync.literal_list(allowed) }} then 'allowed'
            {%- endif %}
            else 'blocked'
        end as guard_status,
        case when action = 'keep' then null else guard_reason end as guard_reason,
        schedule_every,
        schedule_at,
        schedule_weekday,
        schedule_day,
        schedule_timezone,
        notify,
        full_resync_minutes,
        sync_mode,
        max_data_points,
        lookback_minutes,
        event_guarantee,
        event_kind,
        late_events,
        {{ cohort_sync.users_track_batch_size() }} as users_track_batch_size,
        {% if publish_now -%}
        cohort_id in {{ cohort_sync.literal_list(publish_now) }}
        {%- else -%}
        1 = 0
        {%- endif %} as publish_now
    from all_judged
)

select * from final
