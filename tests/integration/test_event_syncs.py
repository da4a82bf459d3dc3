"""Event syncs (cohort_sync_event_syncs) on DuckDB, PostgreSQL and Spark.

Each scenario runs on every engine: real dbt (in-process) finds the events
of the model's window that the ledger has not acknowledged, and the
publisher sends them to the local endpoint through /users/track (inside
`dbt run` on DuckDB, through `cohort-sync publish` elsewhere).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.sync_project import SyncProject

pytestmark = pytest.mark.dbt

TIMESTAMP = {"duckdb": "cast({c} as timestamp)", "postgres": "cast({c} as timestamp)",
             "spark": "cast({c} as timestamp)"}
DOUBLE = {"duckdb": "cast({c} as double)", "postgres": "cast({c} as double precision)",
          "spark": "cast({c} as double)"}


def set_events(project: SyncProject, model: str, columns: dict[str, list[Any]], casts: dict[str, dict]) -> None:
    """(Re)write raw.<model> (text, bigint for `quantity` and `order_id`) and the model casting it."""
    project.warehouse.load(model, columns, {c: "bigint" for c in ("quantity", "order_id") if c in columns})
    engine = project.warehouse.name
    select = ",\n    ".join(casts[c][engine].format(c=c) + f" as {c}" if c in casts else c for c in columns)
    (project.root / "models" / f"{model}.sql").write_text(
        f"select\n    {select}\nfrom {project.warehouse.raw_schema}.{model}\n")


def endpoint_events(braze, array: str = "events") -> list[dict[str, Any]]:
    return [{**event, "external_id": p["external_id"]} for p in braze.profiles() for event in p.get(array, [])]


def test_purchases_and_events_are_sent_once(make_engine_project, braze):
    project = make_engine_project()
    project.declare([], cohort_sync_event_syncs=[
        {"model": "orders", "kind": "purchase", "event_id": "order_key", "time": "ordered_at",
         "properties": ["order_id"], "start_at": "2026-01-01", "create_users": True, "quantity": "quantity"},
        {"model": "app_events", "kind": "event", "event_id": "event_key", "name_column": "event_name",
         "time": "occurred_at", "properties": ["screen"], "backfill": True, "create_users": True},
    ])
    n = 300
    set_events(project, "orders", {
        "order_key": [f"o{i}" for i in range(n)],
        "external_id": [f"u{i % 50}" for i in range(n)],
        "ordered_at": [f"2026-0{1 + i % 9}-{1 + i % 28:02d} 10:{i % 60:02d}:00" for i in range(n)],
        "product_id": [("shirt", "hat")[i % 2] for i in range(n)],
        "currency": ["usd"] * n,
        "price": [f"{i}.5" for i in range(n)],
        "quantity": [1 + i % 3 for i in range(n)],
        "order_id": list(range(n)),
    }, {"ordered_at": TIMESTAMP, "price": DOUBLE})
    set_events(project, "app_events", {
        "event_key": [f"e{i}" for i in range(n)],
        "external_id": [f"u{i % 50}" for i in range(n)],
        "event_name": [("ecommerce.order_placed", "app_open")[i % 2] for i in range(n)],
        "occurred_at": [f"2025-0{1 + i % 9}-{1 + i % 28:02d} 10:{i % 60:02d}:00" for i in range(n)],
        "screen": [None if i % 3 else "home" for i in range(n)],
    }, {"occurred_at": TIMESTAMP})
    assert project.sync()
    purchases = endpoint_events(braze, "purchases")
    assert len(purchases) == n
    first = sorted(purchases, key=lambda p: p["properties"]["order_id"])[7]
    assert {k: first[k] for k in ("product_id", "currency", "price", "quantity", "time")} == {
        "product_id": "hat", "currency": "USD", "price": 7.5, "quantity": 2, "time": "2026-08-08T10:07:00.000Z"}
    events = endpoint_events(braze)
    assert len(events) == n and {e["name"] for e in events} == {"ecommerce.order_placed", "app_open"}
    sent = len(braze.requests())
    assert project.sync()
    assert [r for r in braze.requests()[sent:] if r["endpoint"] == "track"] == []
