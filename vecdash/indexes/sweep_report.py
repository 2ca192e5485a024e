"""A sweep out of vecdash: its table as CSV, its two charts (recall vs QPS, recall vs p95), as
PNG images when kaleido finds a Chrome or Chromium, and always as one self-contained HTML file
(plotly.js embedded: it opens offline, with the charts still interactive)."""

from __future__ import annotations

import html
import importlib.util
import math
from collections.abc import Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from vecdash.errors import InvalidInput

# The sweep's columns in the CSV, in this order (measurement.sweep makes them).
CSV_COLUMNS = ("config", "index", "requested", "method", "setting", "ef_search", "probes",
               "iterative_scan", "recall", "p50_ms", "p50_min_ms", "p50_max_ms", "p95_ms",
               "p95_min_ms", "p95_max_ms", "p99_ms", "qps", "repeats", "index_used", "note")
# (latency column, chart title, axis label): each point is the median over the repeats, its bar
# the fastest to the slowest repeat.
_CHARTS = (
    ("p50", "recall vs p50 latency (up and left is better)", "p50 latency (ms)"),
    ("p95", "recall vs p95 latency (up and left is better)", "p95 latency (ms)"),
)
PNG_SIZE = (1000, 560)  # pixels: readable on a slide
# Below this ratio of slowest to fastest point a log axis shows one tick or none: use linear.
LOG_AXIS_MIN_RATIO = 20.0


def latency_axis(values: Sequence[float]) -> dict[str, object]:
    """Plotly x-axis settings that read well: linear when the latencies span less than
    LOG_AXIS_MIN_RATIO, else log with labels only at powers of ten (0.1, 1, 10, 100 ms; plotly's
    default labels every digit, "2 3 ... 1000 2 3")."""
    positive = [float(v) for v in values if v == v and v > 0]
    if not positive or max(positive) / min(positive) < LOG_AXIS_MIN_RATIO:
        return {"type": "linear", "rangemode": "tozero"}
    return {"type": "log", "dtick": 1, "tickformat": "~g", "minor": {"ticks": "outside"}}


def _point_label(row: pd.Series) -> str:
    if row["method"] == "hnsw" and pd.notna(row["ef_search"]):
        return f"ef_search={int(row['ef_search'])}"
    if row["method"] == "ivfflat" and pd.notna(row["probes"]):
        return f"probes={int(row['probes'])}"
    return "exact scan"


def _bars(rows: pd.DataFrame, column: str) -> dict[str, object]:
    """Asymmetric error bars from the repeat's min / max around the median (none if absent)."""
    low, high = f"{column}_min_ms", f"{column}_max_ms"
    if low not in rows or rows[low].isna().all():
        return {"visible": False}
    return {"type": "data", "symmetric": False, "thickness": 1.2, "width": 4,
            "array": (rows[high] - rows[f"{column}_ms"]).clip(lower=0).tolist(),
            "arrayminus": (rows[f"{column}_ms"] - rows[low]).clip(lower=0).tolist()}


def _hover(rows: pd.DataFrame) -> list[str]:
    text = []
    for r in rows.to_dict("records"):
        low, high = float(r.get("p50_min_ms", math.nan)), float(r.get("p50_max_ms", math.nan))
        spread = f" (repeats {low:.2f}–{high:.2f})" if not math.isnan(low) else ""
        text.append(f"{r['config']} · {r['label']}<br>recall {r['recall']:.3f} · p50 "
                    f"{r['p50_ms']:.2f} ms{spread} · p95 {r['p95_ms']:.2f} ms · "
                    f"{r['qps']:,.0f} QPS")
    return text


def sweep_figures(frame: pd.DataFrame, *, k: int) -> list[go.Figure]:
    """The two sweep charts (recall against p50 and against p95 latency): one line per index
    that served its rows, every point labelled with its setting and drawn with the spread over
    the repeats, the exact scan as a star. Rows whose picked index could not be isolated are
    left out (they repeat another index)."""
    frame = frame.assign(label=[_point_label(r) for _, r in frame.iterrows()])
    isolated = frame["index_used"].astype(bool) if "index_used" in frame else True
    curves = frame[(frame["method"] != "exact") & isolated]
    exact = frame[frame["method"] == "exact"]
    repeats = int(frame["repeats"].max()) if "repeats" in frame and len(frame) else 1
    colours = px.colors.qualitative.D3
    figures = []
    for column, title, label in _CHARTS:
        fig = go.Figure()
        for n, (config, rows) in enumerate(curves.groupby("config", sort=False)):
            # Labels alternate above and below so neighbouring points' labels do not overlap.
            fig.add_trace(go.Scatter(
                x=rows[f"{column}_ms"], y=rows["recall"], mode="lines+markers+text",
                name=str(config), text=rows["label"], textfont={"size": 10},
                textposition=["top center" if i % 2 == 0 else "bottom center"
                              for i in range(len(rows))],
                error_x=_bars(rows, column), line={"color": colours[n % len(colours)]},
                hovertext=_hover(rows), hoverinfo="text"))
        fig.add_trace(go.Scatter(
            x=exact[f"{column}_ms"], y=exact["recall"], mode="markers+text", name="exact scan",
            text=["exact scan"] * len(exact), textposition="middle left",
            marker={"symbol": "star", "size": 14, "color": "black"},
            error_x=_bars(exact, column), hovertext=_hover(exact), hoverinfo="text"))
        spread = (f"median of {repeats} repeats; bars: fastest to slowest repeat" if repeats > 1
                  else "one pass over the queries")
        fig.update_layout(
            title=f"{title}<br><sup>{spread}</sup>", legend_title_text="index",
            xaxis={"title": label, **latency_axis(frame[f"{column}_ms"].tolist())},
            yaxis={"title": f"recall@{k}"}, margin={"t": 80},
            # The legend sits below the plot, where plotly's toolbar cannot cover its first item.
            legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0})
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
