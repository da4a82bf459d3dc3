{#
  Audience rows, attribute sync values and events that cannot be sent,
  with the reason; never sent, never dropped silently. cohort_id is the
  cohort's or the sync's id; attribute_name is null for a cohort's rows
  and for a sync's rows rejected whole (their identifier, or a conflict),
  and holds an event's id for an event. An event older than its sync's window that Braze never
  acknowledged is here as late_outside_window (reported, never sent).
#}
{%- set identifiers = cohort_sync.identifier_columns() %}
{#- the syncs' rows only when syncs of their kind are declared; the dependencies stay #}
{%- set attribute_syncs = cohort_sync.declared_attribute_syncs() | length > 0 %}
{%- set event_syncs = cohort_sync.declared_event_syncs() | length > 0 %}
/* depends on: {{ ref('cohort_sync_attribute_rows') }}, {{ ref('cohort_sync_event_rows') }}, {{ source('cohort_sync', 'event_state') }} */

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
    {%- if attribute_syncs %}
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
    {%- endif %}
    {%- if event_syncs %}
    union all
    select
        event_rows.sync_id as cohort_id,
        event_rows.event_id as attribute_name,
        coalesce(event_rows.reject_reason, 'late_outside_window') as reject_reason,
        {%- for name in identifiers %}
        event_rows.raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ ref('cohort_sync_event_rows') }} as event_rows
    left join {{ source('cohort_sync', 'event_state') }} as ledger
        on ledger.sync_id = event_rows.sync_id
        and ledger.event_id = event_rows.event_id
    -- once per model row (its header); a late event only while Braze never acknowledged it
    where event_rows.property_number = 0
        and (event_rows.reject_reason is not null
            or (event_rows.window_status = 'late' and ledger.event_id is null))
    {%- endif %}
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
