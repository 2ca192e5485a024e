"""The Quality Lab's report: one self-contained HTML file a stakeholder can open anywhere (the
collection, model, indexes and settings used, the metrics table, the weight-sweep chart as
interactive plotly with plotly.js embedded, so no network is needed, the per-query wins and
losses), and writing it safely (a temporary name renamed at the end; an existing file only
with ``force``)."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
import psycopg

from vecdash.atomic_file import atomic_output
from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1
from vecdash.collections import Collection
from vecdash.indexes.catalog import list_vector_indexes
from vecdash.quality import (
    Config,
    EvalRun,
    best_setting,
    compare_configs,
    disagreements,
    metrics_table,
    standard_configs,
    sweep,
)
from vecdash.significance import PairedTest, paired_test

if TYPE_CHECKING:
    from vecdash.tuning import TuneResult


def sweep_figure(swept: pd.DataFrame, best: dict[str, Any], *, measure: str,
                 rrf_k: int) -> go.Figure:
    """The semantic-weight sweep, one line per fusion, the best point starred."""
    fig = go.Figure()
    for fusion, label in (("convex", "convex (min-max)"), ("rrf", f"RRF (k={rrf_k})")):
        part = swept[swept["fusion"] == fusion]
        fig.add_trace(go.Scatter(x=part["weight"], y=part[measure], mode="lines+markers",
                                 name=label))
    fig.add_trace(go.Scatter(x=[best["weight"]], y=[best["value"]], mode="markers+text",
                             marker={"symbol": "star", "size": 18, "color": "gold",
                                     "line": {"width": 1, "color": "black"}},
                             text=[f"best (in-sample): {best['fusion']} w={best['weight']:.1f}"],
                             textposition="top center", name="best"))
    fig.update_layout(xaxis_title="semantic weight (0 keyword only, 1 semantic only)",
                      yaxis_title=measure, height=380, margin={"t": 30, "b": 40})
    return fig


def index_summary(conn: psycopg.Connection[Any], collection: Collection) -> list[str]:
    """The collection's vector indexes in a line each (none: exact scans)."""
    return [f"{ix.label}{'' if ix.valid else ' INVALID'}"
            for ix in list_vector_indexes(conn, collection)]


@dataclass(frozen=True)
class Comparison:
    """A per-query comparison of two rankings, as the Quality Lab shows it."""

    a: str
    b: str
    measure: str
    table: pd.DataFrame  # vecdash.quality.compare_configs' per-query table
    by_type: pd.DataFrame
    test: PairedTest

    def text(self, *, disagreeing: int = 5) -> str:
        """The comparison as plain text (the eval command prints it)."""
        lines = [f"{self.b} (b) against {self.a} (a), {self.measure}:",
                 f"  {self.test.sentence(self.a, self.b)}", f"  ({self.test.method})", ""]
        lines.append(f"  {'type':<12} {'queries':>7} {'a mean':>8} {'b mean':>8} "
                     f"{'b wins':>6} {'a wins':>6} {'ties':>5}")
        for r in self.by_type.itertuples(index=False):
            lines.append(f"  {r[0]:<12} {r[1]:>7} {r[2]:>8.4f} {r[3]:>8.4f} {r[4]:>6} "
                         f"{r[5]:>6} {r[6]:>5}")
        lines += ["", "  where they disagree most:"]
        for row in disagreements(self.table, n=disagreeing).to_dict("records"):
            lines.append(f"  {row['query_id']:<10} {row['type']:<11} a {row['a']:.3f}  "
                         f"b {row['b']:.3f}  shared top-10 {row['shared top-10']:>2}  "
                         f"{str(row['query'])[:60]}")
        return "\n".join(lines)


def _frame(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0,
                         classes="t", escape=True)


def quality_report_html(
    *,
    collection: Collection,
    indexes: Sequence[str],
    queries: int,
    labels: str,
    settings: dict[str, Any],
    metrics: pd.DataFrame,
    sweep_chart: go.Figure,
    comparison: Comparison | None = None,
    tuned: TuneResult | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The report as one HTML document (plotly.js inline: it opens without a network)."""
    e = html.escape
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = {
        "collection": collection.name,
        "dimension / metric": f"{collection.dimension}, {collection.metric}",
        "embedder / model": f"{collection.embedder} / {collection.model}",
        "vector indexes": ", ".join(indexes) or "none (exact scans)",
        "labeled queries": f"{queries} ({labels})",
        **{k: str(v) for k, v in settings.items()},
    }
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>vecdash Quality Lab: {e(collection.name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;"
        "color:#222}table.t{border-collapse:collapse;margin:.5em 0 1.5em}"
        "table.t td,table.t th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:left}"
        "th{background:#f4f4f4}.verdict{padding:.6em 1em;background:#f6f8fa;"
        "border-left:4px solid #888}</style></head><body>",
        f"<h1>Quality Lab: {e(collection.name)}</h1><p>vecdash report, {e(now)}</p>",
        "<table class='t'>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>"
                                      for k, v in facts.items()) + "</table>",
        "<h2>Metrics</h2>", _frame(metrics),
        "<h2>Semantic-weight sweep</h2>",
        "<p>Chosen and scored on the same queries: the star is optimistic. The cross-validated "
        "figure below says what holds on new queries.</p>" if tuned is not None else "",
        sweep_chart.to_html(include_plotlyjs=True, full_html=False),
    ]
    if tuned is not None:
        parts += [f"<h2>Tuning, {tuned.cv.folds}-fold cross-validated</h2>",
                  f"<p>{len(tuned.settings)} settings; chosen on all queries: "
                  f"<b>{e(tuned.chosen.label)}</b>.</p>",
                  _frame(tuned.summary()), _frame(tuned.folds_table())]
    if comparison is not None:
        c = comparison
        parts += [f"<h2>Per query: {e(c.b)} (b) against {e(c.a)} (a), {e(c.measure)}</h2>",
                  f"<p class='verdict'>{e(c.test.sentence(c.a, c.b))}</p>",
                  f"<p><small>{e(c.test.method)}.</small></p>",
                  _frame(c.by_type), "<h3>Wins and losses</h3>", _frame(c.table)]
    parts += [f"<p>note: {e(n)}</p>" for n in notes]
    parts.append("</body></html>")
    return "\n".join(parts)


def compare(run: EvalRun, a: Config, b: Config, *, measure: str, k: int,
            run_b: EvalRun | None = None) -> Comparison:
    """compare_configs and the paired test of b against a, together."""
    table, by_type = compare_configs(run, a, b, measure=measure, k=k, run_b=run_b)
    test = paired_test(table["a"].to_numpy(), table["b"].to_numpy(), measure=measure)
    return Comparison(a.label, b.label, measure, table, by_type, test)


def quality_report(
    run: EvalRun, *, collection: Collection, indexes: Sequence[str], k: int = 10,
    rrf_k: int = 60, weight: float = 0.5, candidates: int = 100, measure: str = "nDCG@10",
    comparison: Comparison | None = None, tuned: TuneResult | None = None, labels: str = "",
) -> str:
    """The report of one run: the standard metrics table, the sweep, and ``comparison`` (by
    default semantic against the sweep's best)."""
    configs = standard_configs(weight=weight, rrf_k=rrf_k)
    swept = sweep(run, rrf_k=rrf_k, k=k)
    best = best_setting(swept, measure)
    if comparison is None:
        comparison = compare(run, configs[0], Config(
            f"best of the sweep: {best['fusion']} w={best['weight']:.1f}", best["weight"],
            best["fusion"], rrf_k, "bm25"), measure=measure, k=k)
    settings = {"candidates per arm": candidates, "k (Recall@k, P@k)": k, "RRF k": rrf_k,
                "hybrid weight in the table": weight, "BM25 k1 / b": f"{DEFAULT_K1:g} / {DEFAULT_B:g}"}
    if run.serving is not None:  # which index (or exact scan) produced the semantic figures
        settings["semantic arm served by"] = run.serving.sentence.removeprefix("Semantic arm: ")
    return quality_report_html(
        collection=collection, indexes=indexes, queries=len(run.queries), labels=labels,
        settings=settings, metrics=metrics_table(run, configs, k=k),
        sweep_chart=sweep_figure(swept, best, measure=measure, rrf_k=rrf_k),
        comparison=comparison, tuned=tuned, notes=run.notes)


def write_report(path: str | os.PathLike[str], text: str, *, force: bool = False) -> Path:
    """Write ``text`` to ``path`` (vecdash.atomic_file: checked first, a temporary name renamed
    at the end, so a failure never leaves a half-written file under the name)."""
    with atomic_output(Path(path), force=force) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path).expanduser()
