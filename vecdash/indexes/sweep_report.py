"""A sweep out of vecdash: its table as CSV, its two charts (recall vs QPS, recall vs p95), as
PNG images when kaleido finds a Chrome or Chromium, and always as one self-contained HTML file
(plotly.js embedded: it opens offline, with the charts still interactive)."""

from __future__ import annotations

import html
import importlib.util
from collections.abc import Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from vecdash.errors import InvalidInput

# The sweep's columns in the CSV, in this order (measurement.sweep makes them).
CSV_COLUMNS = ("config", "index", "requested", "method", "setting", "ef_search", "probes",
               "iterative_scan", "recall", "p50_ms", "p95_ms", "p99_ms", "qps", "index_used",
               "note")
_CHARTS = (
    ("qps", "recall vs QPS (up and right is better)", "queries per second"),
    ("p95_ms", "recall vs p95 latency (up and left is better)", "p95 latency (ms)"),
)
PNG_SIZE = (1000, 560)  # pixels: readable on a slide


def sweep_figures(frame: pd.DataFrame, *, k: int) -> list[go.Figure]:
    """The two sweep charts: one line per index that served its rows, the exact scan as a star.
    Rows whose picked index could not be isolated are left out (they repeat another index)."""
    frame = frame.assign(p95=frame["p95_ms"].round(2), p50=frame["p50_ms"].round(2),
                         QPS=frame["qps"].round(0))
    isolated = frame["index_used"].astype(bool) if "index_used" in frame else True
    curves = frame[(frame["method"] != "exact") & isolated]
    exact = frame[frame["method"] == "exact"]
    figures = []
    for x, title, label in _CHARTS:
        fig = px.line(curves, x=x, y="recall", color="config", markers=True, log_x=True,
                      hover_data={"setting": True, "p50": True, "p95": True, "QPS": True,
                                  "config": False, x: False},
                      labels={x: label, "recall": f"recall@{k}", "config": "index"},
                      title=title, color_discrete_sequence=px.colors.qualitative.D3)
        fig.add_trace(go.Scatter(
            x=exact[x], y=exact["recall"], mode="markers", name="exact scan",
            marker={"symbol": "star", "size": 14, "color": "black"},
            hovertext=[f"exact scan · p50 {r.p50} ms · p95 {r.p95} ms · {r.QPS:.0f} QPS"
                       for r in exact.itertuples()], hoverinfo="text"))
        figures.append(fig)
    return figures


def sweep_csv(frame: pd.DataFrame) -> bytes:
    """The sweep's rows as UTF-8 CSV, one row per setting measured (the exact scan first)."""
    columns = [c for c in CSV_COLUMNS if c in frame.columns]
    return frame[columns].to_csv(index=False).encode("utf-8")


def sweep_html(frame: pd.DataFrame, *, k: int, title: str, context: Sequence[str] = ()) -> str:
    """One HTML file with the charts (interactive; plotly.js inlined once, no network needed to
    open it), the lines of ``context`` (collection, queries, settings) and the sweep's table."""
    figures = sweep_figures(frame, k=k)
    charts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0))
              for i, fig in enumerate(figures)]
    columns = [c for c in CSV_COLUMNS if c in frame.columns and c != "note"]
    table = frame[columns].to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
    notes = sorted({str(n) for n in frame.get("note", pd.Series(dtype=str)) if n})
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
        "text-align:right}.note{color:#a15c00}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in context),
        *(f'<p class="note">{html.escape(n)}</p>' for n in notes),
        *charts, "<h2>Every setting measured</h2>", table, "</body></html>",
    ]
    return "\n".join(parts)


def png_export_available() -> bool:
    """True when charts can be written as PNG here: kaleido is installed and finds a Chrome or
    Chromium on this machine (it can never download one at run time)."""
    if importlib.util.find_spec("kaleido") is None:
        return False
    from choreographer.browsers.chromium import Chromium

    return Chromium.find_browser(skip_local=False) is not None


def figure_png(fig: go.Figure) -> bytes:
    """One chart as a PNG image (kaleido drives a headless Chrome / Chromium; a few seconds)."""
    if not png_export_available():
        raise InvalidInput(
            "Charts can be saved as PNG only where kaleido and a Chrome or Chromium browser are "
            "installed (pip install -r requirements.txt; apt-get install chromium). Download the "
            "HTML report instead: it holds the same charts and opens offline."
        )
    width, height = PNG_SIZE
    try:
        image = fig.to_image(format="png", width=width, height=height)
    except Exception as exc:  # kaleido and the browser raise many kinds
        raise InvalidInput(
            f"The chart could not be drawn as PNG ({type(exc).__name__}: {exc}). Download the "
            "HTML report instead: it holds the same charts and opens offline."
        ) from exc
    return bytes(image)
