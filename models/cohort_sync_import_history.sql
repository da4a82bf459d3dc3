{# The import history for BI tools: one row per publish run and cohort (or attribute sync). #}
with

history as (
    select * from {{ source('cohort_sync', 'run_history') }}
),

final as (
    select
        run_id,
        cohort_id,
        cohort_name,
        entry_point,
        started_at,
        finished_at,
        status,
        added as adds,
        removed as removes,
        members_after,
        requests,
        retries,
        resent_batches,
        coalesce(rejected, 0) as rejected,
        coalesce(data_points, 0) as data_points,
        coalesce(full_resync, false) as full_resync,
        error
    from history
)

select * from final
