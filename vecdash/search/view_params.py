"""What the Search page shows, as one value: read from and written to the page's URL
(``/search?q=...&mode=hybrid&weight=0.7&fusion=rrf&k=10&depth=100&ranker=bm25&cat=cooking``)
and to the page's session-state keys. Pure: no streamlit, no database.

A URL is read leniently: an unknown parameter or a value out of range is left out with a note
saying so, and the rest of the view still opens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlencode

from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1
from vecdash.search.arms import KEYWORD_RANKERS
from vecdash.search.fusion import FUSIONS

MODES = ("hybrid", "semantic", "keyword")
# The Search page's widget bounds (min, max): a URL value outside them is refused.
K_RANGE = (1, 100)
DEPTH_RANGE = (10, 1000)
RRF_K_RANGE = (1, 1000)
K1_RANGE = (0.1, 10.0)
B_RANGE = (0.0, 1.0)
WEIGHT_STEP = 0.05
MAX_QUERY_CHARS = 2000

# The dataclass field -> the Search page's session-state (widget) key.
STATE_KEYS = {
    "query": "search_query", "mode": "search_mode", "weight": "search_weight",
    "fusion": "search_fusion", "k": "search_k", "depth": "search_candidates",
    "ranker": "search_keyword_ranker", "rrf_k": "search_rrf_k", "k1": "search_k1",
    "b": "search_b", "categories": "search_categories",
}
# URL parameter names, in the order a link lists them; rrf_k, k1 and b only when not default.
# collection is read by the page (it picks the sidebar's collection), not by the view.
URL_ORDER = ("q", "mode", "weight", "fusion", "k", "depth", "ranker", "rrf_k", "k1", "b", "cat",
             "collection")


@dataclass(frozen=True)
class SearchView:
    """The Search page's settings: the query, the ranking and the category filter."""

    query: str = ""
    mode: str = "hybrid"
    weight: float = 0.5
    fusion: str = "convex"
    k: int = 10
    depth: int = 100
    ranker: str = "bm25"
    rrf_k: int = 60
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    categories: tuple[str, ...] = field(default_factory=tuple)

    def to_state(self) -> dict[str, Any]:
        """The session-state values of the page's widgets for this view."""
        state = {STATE_KEYS[f.name]: getattr(self, f.name) for f in fields(self)}
        state["search_categories"] = list(self.categories)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SearchView:
        """The view the widgets hold (missing or unreadable keys at their defaults)."""
        view, _ = view_from_params(
            {"q": [str(state.get("search_query", ""))],
             **{name: [str(state[key])] for name, key in _SCALAR_PARAMS.items()
                if state.get(key) is not None},
             "cat": [str(c) for c in state.get("search_categories", None) or ()]})
        return view

    def to_params(self) -> dict[str, str | list[str]]:
        """The URL's query parameters for this view (``st.query_params.from_dict`` takes it)."""
        params: dict[str, str | list[str]] = {} if not self.query else {"q": self.query}
        params |= {
            "mode": self.mode, "weight": _number(self.weight),
            "fusion": self.fusion, "k": str(self.k), "depth": str(self.depth),
            "ranker": self.ranker,
        }
        if self.rrf_k != 60:
            params["rrf_k"] = str(self.rrf_k)
        if self.k1 != DEFAULT_K1:
            params["k1"] = _number(self.k1)
        if self.b != DEFAULT_B:
            params["b"] = _number(self.b)
        if self.categories:
            params["cat"] = list(self.categories)
        return params

    def url(self, base: str, *, collection: str | None = None) -> str:
        """The link to this view: ``base`` (e.g. ``http://localhost:8501/search``) + parameters,
        with ``collection=`` when given."""
        params = self.to_params()
        if collection:
            params["collection"] = collection
        pairs = [(name, v) for name, value in params.items()
                 for v in (value if isinstance(value, list) else [value])]
        return f"{base}?{urlencode(pairs)}"


# URL parameter -> session key, for the parameters holding one value.
_SCALAR_PARAMS = {"mode": "search_mode", "weight": "search_weight", "fusion": "search_fusion",
                  "k": "search_k", "depth": "search_candidates",
                  "ranker": "search_keyword_ranker", "rrf_k": "search_rrf_k", "k1": "search_k1",
                  "b": "search_b"}


def _number(x: float) -> str:
    return f"{x:g}"


def _int_in(text: str, low: int, high: int) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if low <= value <= high else None


def _float_in(text: str, low: float, high: float) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def view_from_params(
    params: Mapping[str, Sequence[str]],
    *,
    base: SearchView | None = None,
    categories: Sequence[str] | None = None,
) -> tuple[SearchView, list[str]]:
    """The view a URL asks for, on top of ``base`` (defaults when None), and one note per
    parameter left out (unknown name, value out of range, category the collection does not
    have; ``categories`` None accepts any). ``params`` maps a name to all its values."""
    view = base or SearchView()
    notes: list[str] = []
    changes: dict[str, Any] = {}

    def refuse(name: str, value: str, allowed: str) -> None:
        notes.append(f"Ignored {name}={value!r} in the link: {allowed}.")

    for name, values in params.items():
        if not values:
            continue
        value = values[-1].strip()
        if name == "q":
            changes["query"] = values[-1][:MAX_QUERY_CHARS]
            if len(values[-1]) > MAX_QUERY_CHARS:
                notes.append(f"The query in the link was cut to {MAX_QUERY_CHARS} characters.")
        elif name == "mode":
            if value in MODES:
                changes["mode"] = value
            else:
                refuse(name, value, f"use one of {', '.join(MODES)}")
        elif name == "fusion":
            if value in FUSIONS:
                changes["fusion"] = value
            else:
                refuse(name, value, f"use one of {', '.join(FUSIONS)}")
        elif name == "ranker":
            if value in KEYWORD_RANKERS:
                changes["ranker"] = value
            else:
                refuse(name, value, f"use one of {', '.join(KEYWORD_RANKERS)}")
        elif name == "weight":
            weight = _float_in(value, 0.0, 1.0)
            if weight is None:
                refuse(name, value, "use a number from 0 to 1")
            else:
                snapped = round(round(weight / WEIGHT_STEP) * WEIGHT_STEP, 2)
                if abs(snapped - weight) > 1e-9:
                    notes.append(f"The weight {value} in the link was rounded to {snapped:g} "
                                 f"(the slider moves in steps of {WEIGHT_STEP:g}).")
                changes["weight"] = snapped
        elif name in ("k", "depth", "rrf_k"):
            low, high = {"k": K_RANGE, "depth": DEPTH_RANGE, "rrf_k": RRF_K_RANGE}[name]
            number = _int_in(value, low, high)
            if number is None:
                refuse(name, value, f"use a whole number from {low} to {high}")
            else:
                changes[name] = number
        elif name in ("k1", "b"):
            flow, fhigh = K1_RANGE if name == "k1" else B_RANGE
            real = _float_in(value, flow, fhigh)
            if real is None:
                refuse(name, value, f"use a number from {flow:g} to {fhigh:g}")
            else:
                changes[name] = real
        elif name == "collection":
            continue
        elif name == "cat":
            wanted = list(dict.fromkeys(v.strip() for v in values if v.strip()))
            known = [c for c in wanted if categories is None or c in categories]
            unknown = [c for c in wanted if c not in known]
            if unknown:
                notes.append(f"Ignored the categor{'y' if len(unknown) == 1 else 'ies'} "
                             f"{', '.join(repr(c) for c in unknown)} in the link: this "
                             "collection has no such category.")
            changes["categories"] = tuple(known)
        else:
            notes.append(f"Ignored the unknown parameter {name!r} in the link (known: "
                         f"{', '.join(URL_ORDER)}).")
    return replace(view, **changes), notes
