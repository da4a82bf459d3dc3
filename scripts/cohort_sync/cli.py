"""`cohort-sync`: publish from any scheduler, inspect history, run the local endpoint.

    cohort-sync publish [--dry-run]     send the planned changes of the cohorts due
    cohort-sync publish --cohort ID --now   publish one cohort regardless of its schedule
    cohort-sync status                  recent publish history and its failed notifications
    cohort-sync report -o report.html   an HTML page: cohort sizes over time, recent runs
    cohort-sync local-braze             the local Braze-compatible endpoint

Exit status: 0 when every cohort succeeded, 1 when a cohort failed, was
blocked by a guard rail, or the run was stopped, 2 for a configuration or
warehouse error (the models and state tables older than this version among
them), or another run in progress (nothing sent).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from .config import (
    DATA_IMPORT_KEY_VAR,
    PARTNER_API_KEY_VAR,
    PARTNER_NAME_VAR,
    REST_API_KEY_VAR,
    ConfigError,
)
from .ops.summary import format_notifications, format_summary, format_table
from .run.publish import PublishOptions, publish_run
from .warehouse.ledger import Ledger, LockHeldError, StaleSchemaError
from .warehouse.migrations import open_current_ledger
from .warehouse.target import WarehouseError, resolve_target

log = logging.getLogger("cohort_sync")
T = TypeVar("T")


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project-dir", default=".", help="the dbt project (default: .)")
    parser.add_argument(
        "--profiles-dir",
        help="where profiles.yml is (default as dbt: DBT_PROFILES_DIR, the project, ~/.dbt)",
    )
    parser.add_argument("--profile", help="profile name (default: the project's)")
    parser.add_argument("--target", "-t", help="target name (default: the profile's)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cohort-sync", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    publish_cmd = commands.add_parser("publish", help="send the planned changes to Braze")
    _add_target_arguments(publish_cmd)
    publish_cmd.add_argument(
        "--dry-run", action="store_true", help="print what would be sent and its data points; send nothing"
    )
    publish_cmd.add_argument(
        "--full-resync",
        action="store_true",
        help="also re-send every current member as an add, and every current value of each attribute sync "
             "(repairs drift after edits in Braze; event syncs never re-send)",
    )
    publish_cmd.add_argument(
        "--allow-removals",
        action="append",
        default=[],
        metavar="COHORT_ID",
        help="publish this cohort or sync even if its guard blocks it (mass removal, emptying, "
             "max_data_points, an event sync's max_events), for this run; repeatable",
    )

    publish_cmd.add_argument(
        "--cohort",
        action="append",
        default=[],
        metavar="COHORT_ID",
        help="publish only this cohort or sync (when due, or at once with --now); repeatable",
    )
    publish_cmd.add_argument(
        "--now", action="store_true", help="publish regardless of schedules (the manual trigger)"
    )

    status_cmd = commands.add_parser("status", help="recent publish history")
    _add_target_arguments(status_cmd)
    status_cmd.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")

    report_cmd = commands.add_parser(
        "report", help="write an HTML page: each cohort's size over time and the recent runs"
    )
    _add_target_arguments(report_cmd)
    report_cmd.add_argument(
        "--output", "-o", default="cohort_sync_report.html", help="where to write it (default: %(default)s)"
    )
    report_cmd.add_argument("--limit", type=int, default=50, help="recent runs to list (default 50)")

    local = commands.add_parser(
        "local-braze",
        help="run the local Braze-compatible endpoint (keys from the BRAZE_* variables)",
    )
    local.add_argument("--host", default="127.0.0.1")
    local.add_argument("--port", type=int, default=4010)
    local.add_argument("--latency-ms", type=float, default=0, help="added to every request")
    local.add_argument(
        "--rate-limit-per-hour", type=float, help="answer 429 beyond this rate, as Braze does"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "publish":
            return _publish(args)
        if args.command == "status":
            return _status(args)
        if args.command == "report":
            return _report(args)
        return _local_braze(args)
    except (ConfigError, WarehouseError, LockHeldError, StaleSchemaError) as exc:
        print(f"cohort-sync: {exc}", file=sys.stderr)
        return 2


def _publish(args: argparse.Namespace) -> int:
    options = PublishOptions.from_env(
        dry_run=args.dry_run, full_resync=args.full_resync, allow_removals=args.allow_removals,
        only=args.cohort, now=args.now,
    )
    target = resolve_target(args.project_dir, args.profiles_dir, args.profile, args.target)
    summary = publish_run(lambda: open_current_ledger(target), entry_point="cli", options=options)
    heading = "dry run: would send" if args.dry_run else "publish run"
    print(f"cohort-sync {heading} {summary.run_id} ({target.adapter_type} target '{target.target_name}')")
    print(format_summary(summary))
    if summary.stopped:
        print(f"cohort-sync: run stopped: {summary.stopped}", file=sys.stderr)
    return 0 if summary.ok else 1


def _read(args: argparse.Namespace, read: Callable[[Ledger], T]) -> T:
    """What `read` finds in the ledger of the target the arguments name."""
    target = resolve_target(args.project_dir, args.profiles_dir, args.profile, args.target)
    ledger = open_current_ledger(target)
    try:
        ledger.check_schema(state_only=True)
        return read(ledger)
    finally:
        ledger.close()


def _status(args: argparse.Namespace) -> int:
    def read(ledger: Ledger) -> tuple[list, list]:
        rows = ledger.history(limit=args.limit)
        return rows, ledger.notifications({row.run_id for row in rows})

    rows, notifications = _read(args, read)
    print(format_table(rows, history=True))
    if notifications:
        print(f"\n{format_notifications(notifications, history=True)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone
    from pathlib import Path

    from .ops.report import render_report

    sizes, recent = _read(args, lambda ledger: (ledger.successful_syncs(), ledger.history(limit=args.limit)))
    page = render_report(sizes, recent, datetime.now(timezone.utc))
    Path(args.output).write_text(page, encoding="utf-8")
    print(f"cohort-sync: wrote {args.output} ({len({row.cohort_id for row in sizes})} cohorts, {len(recent)} recent runs)")
    return 0


def _local_braze(args: argparse.Namespace) -> int:
    from .braze.local import LocalBraze

    partner = (PARTNER_NAME_VAR, PARTNER_API_KEY_VAR, DATA_IMPORT_KEY_VAR)
    if not any(os.environ.get(v) for v in (*partner, REST_API_KEY_VAR)):
        raise ConfigError(f"the local endpoint needs the keys it accepts: {', '.join(partner)} for the partner "
                          f"cohort endpoints, {REST_API_KEY_VAR} for /users/track, or both")
    server = LocalBraze(
        partner_name=os.environ.get(PARTNER_NAME_VAR) or "",
        partner_api_key=os.environ.get(PARTNER_API_KEY_VAR) or "",
        data_import_key=os.environ.get(DATA_IMPORT_KEY_VAR) or "",
        rest_api_key=os.environ.get(REST_API_KEY_VAR) or None,
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        rate_limit_per_hour=args.rate_limit_per_hour,
    )
    print(f"local Braze-compatible endpoint listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
