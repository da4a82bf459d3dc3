"""The HTML report: escaped text, one chart point per successful sync."""

from __future__ import annotations

from datetime import datetime

from cohort_sync.ops.report import render_report
from cohort_sync.warehouse.ledger import HistoryRow


def row(cohort_id: str, day: int, members: int, status: str = "success", name: str = "Churn") -> HistoryRow:
    return HistoryRow(run_id=f"r{day}", cohort_id=cohort_id, cohort_name=name, entry_point="cli",
                      started_at=datetime(2026, 1, day, 6), finished_at=datetime(2026, 1, day, 6, 1),
                      status=status, added=members, members_after=members)


def test_report_charts_each_cohort_and_escapes_what_it_shows():
    sizes = [row("churn", 1, 10), row("churn", 2, 25), row("churn", 3, 5),
             row("vip", 2, 7, name="<script>alert(1)</script>")]
    recent = [row("vip", 4, 7, status="failed"), *sizes]
    page = render_report(sizes, recent, datetime(2026, 1, 4, 12))
    assert page.count("<svg") == 2
    churn = page[page.index('data-cohort="churn"'):page.index('data-cohort="vip"')]
    assert churn.count("<circle") == 3
    assert "2026-01-02 06:00 UTC: 25" in churn  # each point's tooltip
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('<tr class="run">') == 5 and '<td class="failed">failed</td>' in page


def test_report_without_history_says_so():
    page = render_report([], [], datetime(2026, 1, 4, 12))
    assert "No successful sync yet." in page and "<svg" not in page
