"""Writes the demo's small, deterministic dataset into demo/seeds/.

A shop with registered customers (Braze external ids), CRM leads known to
Braze only by a user alias, and anonymous app devices. Rows are dated from
2026-05-01 to 2026-11-08, so moving the demo's as-of date from 2026-11-01 to
2026-11-08 lets a week of new orders and events arrive.

    python demo/generate_seeds.py
"""

from __future__ import annotations

import csv
import random
from datetime import date, datetime, timedelta
from pathlib import Path

SEEDS = Path(__file__).parent / "seeds"
START = date(2026, 5, 1)
END = date(2026, 11, 8)


def _day(rng: random.Random, start: date = START, end: date = END) -> date:
    return start + timedelta(days=rng.randrange((end - start).days + 1))


def main() -> None:
    rng = random.Random(2026)
    SEEDS.mkdir(exist_ok=True)

    customers = []
    for n in range(1, 401):
        # A few guest checkouts have no external id: they land in the rejects model.
        external_id = "" if n % 97 == 0 else f"cust-{n:05d}"
        customers.append((n, external_id, f"customer{n}@example.com", _day(rng, START, date(2026, 8, 1))))
    _write("customers", ["customer_id", "external_id", "email", "signed_up_on"], customers)

    orders, order_id = [], 0
    for customer_id, _, _, signed_up in customers:
        for _ in range(rng.choice([0, 1, 2, 2, 3, 4, 6])):
            order_id += 1
            orders.append((order_id, customer_id, _day(rng, signed_up), round(rng.uniform(9, 240), 2)))
    orders.sort(key=lambda row: (row[2], row[0]))
    _write("orders", ["order_id", "customer_id", "ordered_on", "amount"], orders)

    leads = []
    for n in range(1, 201):
        leads.append((f"lead-{n:04d}", "crm_lead_id", rng.randrange(0, 100), _day(rng, date(2026, 9, 1))))
    _write("crm_leads", ["lead_id", "alias_label", "lead_score", "last_activity_on"], leads)

    events = []
    kinds = ["app_open", "product_view", "product_view", "add_to_cart", "purchase"]
    for n in range(1, 301):
        device_id = f"dev-{n:05d}-{rng.randrange(16**6):06x}"
        for _ in range(rng.randrange(1, 12)):
            at = datetime.combine(_day(rng, date(2026, 10, 1)), datetime.min.time()) + timedelta(
                minutes=rng.randrange(24 * 60)
            )
            events.append((device_id, rng.choice(kinds), at.isoformat(sep=" ")))
    events.sort(key=lambda row: (row[2], row[0]))
    _write("app_events", ["device_id", "event_name", "occurred_at"], events)


def _write(name: str, header: list[str], rows: list[tuple]) -> None:
    with open(SEEDS / f"{name}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


if __name__ == "__main__":
    main()
