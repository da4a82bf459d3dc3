"""Publishes cohort_sync_changes to Braze during `dbt run` (DuckDB only).

Runs after the changes and cohorts models; its table is the run's summary.
Braze settings and secrets come from environment variables, read in Python,
never from dbt vars.
"""


def model(dbt, session):
    dbt.config(materialized="table")
    dry_run = dbt.config.get("cohort_sync_dry_run")
    full_resync = dbt.config.get("cohort_sync_full_resync")

    # Declares the dependencies, so this model runs after the plan is built.
    dbt.ref("cohort_sync_changes")
    dbt.ref("cohort_sync_cohorts")
    dbt.ref("cohort_sync_membership")
    dbt.ref("cohort_sync_rejects")
    dbt.ref("cohort_sync_attribute_changes")
    dbt.ref("cohort_sync_attribute_rows")
    dbt.ref("cohort_sync_event_changes")
    dbt.ref("cohort_sync_event_rows")
    dbt.source("cohort_sync", "published_state")
    dbt.source("cohort_sync", "published_cohorts")
    dbt.source("cohort_sync", "delivery_log")
    dbt.source("cohort_sync", "run_history")
    dbt.source("cohort_sync", "inflight")
    dbt.source("cohort_sync", "lock")
    dbt.source("cohort_sync", "notification_log")
    dbt.source("cohort_sync", "schema_migrations")
    dbt.source("cohort_sync", "rejected_changes")
    dbt.source("cohort_sync", "attribute_state")
    dbt.source("cohort_sync", "event_state")
    dbt.source("cohort_sync", "event_inflight")
    dbt.source("cohort_sync", "event_uncertain")

    from cohort_sync.run.dbt_model import as_bool, publish_in_dbt
    from cohort_sync.warehouse.ledger import Relations

    # dbt's generated module-level ref()/source() resolve a name to its
    # rendered relation when given a loader; str keeps just the name.
    def name(*args):
        return (ref if len(args) == 1 else source)(*args, dbt_load_df_function=str)  # noqa: F821

    relations = Relations(
        changes=name("cohort_sync_changes"),
        cohorts=name("cohort_sync_cohorts"),
        membership=name("cohort_sync_membership"),
        rejects=name("cohort_sync_rejects"),
        published_state=name("cohort_sync", "published_state"),
        published_cohorts=name("cohort_sync", "published_cohorts"),
        delivery_log=name("cohort_sync", "delivery_log"),
        run_history=name("cohort_sync", "run_history"),
        inflight=name("cohort_sync", "inflight"),
        lock=name("cohort_sync", "lock"),
        notification_log=name("cohort_sync", "notification_log"),
        schema_migrations=name("cohort_sync", "schema_migrations"),
        rejected_changes=name("cohort_sync", "rejected_changes"),
        attribute_changes=name("cohort_sync_attribute_changes"),
        attribute_rows=name("cohort_sync_attribute_rows"),
        attribute_state=name("cohort_sync", "attribute_state"),
        event_changes=name("cohort_sync_event_changes"),
        event_rows=name("cohort_sync_event_rows"),
        event_state=name("cohort_sync", "event_state"),
        event_inflight=name("cohort_sync", "event_inflight"),
        event_uncertain=name("cohort_sync", "event_uncertain"),
    )
    return publish_in_dbt(session, relations, dry_run=as_bool(dry_run), full_resync=as_bool(full_resync))
