"""`cohort-sync report`: one self-contained HTML page (no scripts, no external
files) with each cohort's size over time as an SVG chart and the recent runs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from html import escape

from ..run.history import HistoryRow
from .summary import first_line

WIDTH, HEIGHT, PAD = 640, 160, 36

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2330; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; } th, td { padding: .25rem .6rem; border-bottom: 1px solid #e3e6ec; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.success { color: #1a7f37; } .partial { color: #9a6700; } .failed, .blocked { color: #c62828; } .not_due, .dry_run { color: #6b7280; }
svg { background: #f7f8fa; } polyline { fill: none; stroke: #2563eb; stroke-width: 2; }
circle { fill: #2563eb; } text { font-size: 11px; fill: #4b5563; }
"""


def size_chart(points: Sequence[tuple[datetime, int]]) -> str:
    """An SVG line chart of members over time (one circle per successful sync)."""
    times = [t.timestamp() for t, _ in points]
    sizes = [n for _, n in points]
    t0, t1 = min(times), max(times)
    top = max(sizes) or 1

    def x(t: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)

    def y(n: int) -> float:
        return HEIGHT - PAD + (2 * PAD - HEIGHT) * n / top

    coords = [(round(x(t), 1), round(y(n), 1)) for t, n in zip(times, sizes, strict=True)]
    dots = "".join(f'<circle cx="{cx}" cy="{cy}" r="3"><title>{escape(f"{when:%Y-%m-%d %H:%M} UTC: {n:,}")}'
                   f"</title></circle>" for (cx, cy), (when, n) in zip(coords, points, strict=True))
    return (
        f'<svg role="img" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
        f'<polyline points="{" ".join(f"{cx},{cy}" for cx, cy in coords)}"/>{dots}'
        f'<text x="4" y="{PAD}">{top:,}</text><text x="4" y="{HEIGHT - PAD}">0</text>'
        f'<text x="{PAD}" y="{HEIGHT - 8}">{points[0][0]:%Y-%m-%d}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">{points[-1][0]:%Y-%m-%d}</text></svg>'
    )


def render_report(sizes: Sequence[HistoryRow], recent: Sequence[HistoryRow], generated_at: datetime) -> str:
    """The page: per cohort (from its successful syncs) a size chart, then the recent runs."""
    by_cohort: dict[str, list[HistoryRow]] = defaultdict(list)
    for row in sizes:
        by_cohort[row.cohort_id].append(row)
    sections = []
    for cohort_id, rows in sorted(by_cohort.items()):
        points = [(row.started_at, int(row.members_after or 0)) for row in rows]
        sections.append(
            f'<section class="cohort" data-cohort="{escape(cohort_id)}"><h2>{escape(rows[-1].cohort_name)} '
            f"<small>({escape(cohort_id)})</small></h2><p>{points[-1][1]:,} members after the last "
            f"successful sync, {points[-1][0]:%Y-%m-%d %H:%M} UTC ({len(points)} syncs)</p>"
            f"{size_chart(points)}</section>"
        )
    head = ["started (UTC)", "cohort", "status", "added", "removed", "members", "requests", "retries", "data points",
            "possibly duplicated", "possibly lost", "error"]
    body = "".join(
        f'<tr class="run"><td>{row.started_at:%Y-%m-%d %H:%M}</td><td>{escape(row.cohort_id)}</td>'
        f'<td class="{escape(row.status)}">{escape(row.status)}</td>'
        + "".join(f'<td class="n">{value:,}</td>' if value is not None else '<td class="n"></td>'
                  for value in (row.added, row.removed, row.members_after, row.requests, row.retries,
                                row.data_points, row.possibly_duplicated, row.possibly_lost))
        + f"<td>{escape(first_line(row.error))}</td></tr>"
        for row in recent
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>cohort_sync: cohort sizes and recent imports</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Cohort sizes and recent imports</h1><p>Generated {generated_at:%Y-%m-%d %H:%M} UTC.</p>"
        + ("".join(sections) or "<p>No successful sync yet.</p>")
        + "<h2>Recent runs</h2><table><thead><tr>"
        + "".join(f"<th>{title}</th>" for title in head)
        + f"</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )
