{#
  What each event sync must send: the events of cohort_sync_event_rows in
  the sync's window that Braze has not acknowledged, by event_id, against
  the ledger cohort_sync_event_state, numbered in time order into
  /users/track batches (at most var cohort_sync_users_track_batch_size
  events each). One row per event and field, as in the rows: the header
  (property_number 0) and each property with a value.

  Never planned: rejected events (cohort_sync_rejects), late ones (older
  than the window: counted in cohort_sync_cohorts.late_events), events the
  ledger holds (acknowledged, or skipped as possibly lost under
  at_most_once), and events Braze rejected with the same content
  (cohort_sync_rejected_changes, delivery 'event'; var
  cohort_sync_retry_rejected: true plans them again). Every row carries the
  plan's id.
#}
{#- with nothing declared it is empty: a view costs nothing to build (a table costs seconds on Spark) #}
{{ config(materialized='table' if var('cohort_sync_event_syncs', none) else 'view') }}
{%- set string = dbt.type_string() -%}
{%- set track_batch_size = cohort_sync.users_track_batch_size() -%}
{%- set retry_rejected = var('cohort_sync_retry_rejected', false) -%}

with

rows_read as (
    select *
    from {{ ref('cohort_sync_event_rows') }}
    where reject_reason is null
        and window_status = 'in_window'
),

{#- rows of one event with the same content are one event #}
events as (
    select distinct
        sync_id,
        event_id,
        member_key,
        event_time_ms,
        content_hash
    from rows_read
    where property_number = 0
),

acknowledged as (
    select distinct
        sync_id,
        event_id
    from {{ source('cohort_sync', 'event_state') }}
),

rejected as (
    select distinct
        cohort_id as sync_id,
        attribute_name as event_id,
        value_hash as content_hash
    from {{ source('cohort_sync', 'rejected_changes') }}
    where delivery = 'event'
    {%- if retry_rejected %}
        and 1 = 0
    {%- endif %}
),

pending as (
    select
        events.*
    from events
    left join acknowledged
        on acknowledged.sync_id = events.sync_id
        and acknowledged.event_id = events.event_id
    left join rejected
        on rejected.sync_id = events.sync_id
        and rejected.event_id = events.event_id
        and rejected.content_hash = events.content_hash
    where acknowledged.event_id is null
        and rejected.event_id is null
),

numbered as (
    select
        pending.*,
        row_number() over (partition by sync_id order by event_time_ms, event_id) as change_number
    from pending
),

final as (
    select distinct
        cast({{ cohort_sync.quoted_literal(invocation_id) }} as {{ string }}) as plan_id,
        numbered.sync_id,
        {{ cohort_sync.batch_number('numbered.change_number', track_batch_size) }} as batch_number,
        numbered.change_number,
        numbered.event_id,
        numbered.member_key,
        numbered.event_time_ms,
        rows_read.event_name,
        rows_read.product_id,
        rows_read.currency,
        rows_read.price_text,
        rows_read.quantity_text,
        numbered.content_hash,
        rows_read.data_points,
        rows_read.property_number,
        rows_read.property_name,
        rows_read.value_type,
        rows_read.value_text
    from numbered
    inner join rows_read
        on rows_read.sync_id = numbered.sync_id
        and rows_read.event_id = numbered.event_id
)

select * from final
order by sync_id, batch_number, change_number, property_number
