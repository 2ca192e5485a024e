"""Embedding Map: a UMAP (or PCA) projection of a collection, linked to search.

Stored projections come back at once; otherwise a PCA preview is drawn while UMAP runs. Select a
point (click it, or lasso several, or pick a document beside the map) to see its nearest neighbours
from pgvector; type a query to place it on the map with its semantic and keyword hits."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from map_picture import PALETTE, render_png
from vecdash.projection import (
    DEFAULT_SAMPLE,
    MAX_SAMPLE,
    Placement,
    Projection,
    ProjectionParams,
    cached_projection,
    cluster_labels,
    compute_projection,
    coordinates_csv,
    metadata_fields,
    metadata_values,
    pca_projection,
    place_vector,
    sample_vectors,
)
from vecdash.search import embed_query, hybrid_search, semantic_search

st.title("Embedding Map")
st.caption(
    "Each point is a document, placed so that documents with similar embeddings sit close "
    "together (UMAP, or PCA). Hover for the title; click a point (or lasso several with the "
    "toolbar's lasso) to see the nearest "
    "neighbours; place a query to see where it lands and which documents it retrieves."
)

collection = ui.page_collection()

# ---------------------------------------------------------------- controls
controls = st.columns([1, 1, 1, 1, 1])
method = controls[0].selectbox("Projection", ["umap", "pca"], key="map_method",
                               format_func={"umap": "UMAP", "pca": "PCA"}.__getitem__)
sample_size = controls[1].number_input(
    "Sample up to", min_value=10, max_value=MAX_SAMPLE, value=DEFAULT_SAMPLE, step=1000,
    key="map_sample", help="Rows drawn from the collection (stratified by category), in SQL.",
)
n_neighbors = controls[2].slider("n_neighbors", 2, 100, 15, key="map_neighbors",
                                 disabled=method == "pca",
                                 help="UMAP: larger keeps more global structure.")
min_dist = controls[3].slider("min_dist", 0.0, 0.99, 0.1, 0.01, key="map_min_dist",
                              disabled=method == "pca", help="UMAP: how tightly points pack.")
seed = controls[4].number_input("Seed", min_value=0, max_value=2**31 - 1, value=42,
                                key="map_seed")
refresh = st.button("Recompute", help="Ignore the stored projection and fit again.")


def fit(params: ProjectionParams, chart_slot: Any) -> Projection | None:
    """The projection: stored, or computed with a PCA preview shown while UMAP runs."""
    assert collection is not None
    with ui.connection() as conn:
        if not refresh:
            found = cached_projection(conn, collection, params)
            if found is not None:
                return found
        sample = sample_vectors(conn, collection, limit=params.sample_size, seed=params.seed)
        if len(sample) == 0:
            st.warning(f"{collection.name!r} has no usable vectors to map (empty, or only NULL / "
                       f"zero vectors: {sample.skipped} skipped).")
            return None
        if params.method == "umap":
            preview = pca_projection(collection, sample, params)
            chart_slot.plotly_chart(figure(preview, colour_labels(preview, "category"), title=(
                "PCA preview: UMAP is running…")), key="map_preview")
            with st.status(f"Computing UMAP for {len(sample):,} points…") as status:
                result = compute_projection(conn, collection, sample, params, store=True)
                status.update(label=f"UMAP ready in {result.seconds:.1f} s", state="complete")
            chart_slot.empty()
            return result
        return compute_projection(conn, collection, sample, params)


def colour_labels(projection: Projection, by: str, n_clusters: int = 8) -> list[str]:
    frame = projection.frame
    if by == "category":
        return [str(c) if c is not None else "(none)" for c in frame["category"]]
    if by == "cluster":
        key = ("map_clusters", projection.collection, projection.params.key,
               projection.data_version, n_clusters)
        if st.session_state.get("map_clusters_key") != key:
            st.session_state["map_clusters"] = cluster_labels(projection.vectors,
                                                              n_clusters=n_clusters,
                                                              seed=projection.params.seed)
            st.session_state["map_clusters_key"] = key
        return [f"cluster {c}" for c in st.session_state["map_clusters"]]
    if by.startswith("metadata: "):
        return metadata_values(frame, by.removeprefix("metadata: "))
    return ["documents"] * len(frame)


def hover_text(frame: pd.DataFrame) -> list[str]:
    return [
        f"<b>{title or pid}</b><br>{'<br>'.join(textwrap.wrap(str(snippet)[:200], 70))}"
        for pid, title, snippet in zip(frame["id"], frame["title"], frame["snippet"], strict=True)
    ]


def figure(
    projection: Projection,
    labels: list[str],
    *,
    title: str = "",
    selected: list[str] | None = None,
    neighbours: list[str] | None = None,
    semantic: list[str] | None = None,
    keyword: list[str] | None = None,
    query: Placement | None = None,
) -> go.Figure:
    frame = projection.frame
    fig = go.Figure()
    text = np.array(hover_text(frame), dtype=object)
    label_array = np.array(labels, dtype=object)
    ids = frame["id"].to_numpy()
    for number, group in enumerate(dict.fromkeys(labels)):
        mask = label_array == group
        fig.add_trace(go.Scattergl(
            x=frame["x"][mask], y=frame["y"][mask], mode="markers", name=str(group),
            marker={"size": 6 if len(frame) < 3000 else 4, "opacity": 0.75,
                    "color": PALETTE[number % len(PALETTE)]},  # the same colours as the PNG
            customdata=ids[mask], hovertext=text[mask], hoverinfo="text",
        ))
    position = {pid: i for i, pid in enumerate(ids)}

    def overlay(pids: list[str] | None, name: str, marker: dict[str, Any]) -> None:
        rows = [position[p] for p in pids or [] if p in position]
        if rows:
            fig.add_trace(go.Scattergl(
                x=frame["x"].iloc[rows], y=frame["y"].iloc[rows], mode="markers", name=name,
                marker=marker, customdata=ids[rows], hovertext=text[rows], hoverinfo="text",
            ))

    ring = {"symbol": "circle-open", "line": {"width": 2}}
    overlay(neighbours, "nearest neighbours", {**ring, "size": 13, "color": "black"})
    overlay(semantic, "semantic hits", {**ring, "size": 15, "color": "#d62728"})
    overlay(keyword, "keyword hits", {"symbol": "diamond-open", "size": 15, "color": "#1f77b4",
                                      "line": {"width": 2}})
    overlay(selected, "selected", {"symbol": "x", "size": 14, "color": "black"})
    if query is not None:
        fig.add_trace(go.Scattergl(
            x=[query.x], y=[query.y], mode="markers", name="query",
            marker={"symbol": "star", "size": 22, "color": "#d62728",
                    "line": {"width": 1, "color": "black"}},
            hovertext=[f"query<br>placed by {query.how}"], hoverinfo="text",
        ))
    # No dragmode: Streamlit then pans on drag and selects on click; a "lasso" dragmode would
    # turn click selection off (the lasso stays in the toolbar). The top margin keeps the
    # toolbar clear of the legend's first item.
    fig.update_layout(
        title=title or None, height=640, margin={"l": 10, "r": 10, "t": 48 if title else 36, "b": 10},
        legend={"itemsizing": "constant"},
        xaxis={"showticklabels": False, "title": None},
        yaxis={"showticklabels": False, "title": None},
    )
    return fig


def selected_from_chart() -> list[str]:
    """Ids picked with a click or the lasso, from the chart's last selection event."""
    event = st.session_state.get("map_chart")
    if not event:
        return []
    points = event.get("selection", {}).get("points", [])
    ids = []
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, list):
            custom = custom[0] if custom else None
        if custom is not None:
            ids.append(str(custom))
    return list(dict.fromkeys(ids))


with ui.errors_shown():
    params = ProjectionParams(method=method, n_neighbors=int(n_neighbors), min_dist=float(min_dist),
                              sample_size=int(sample_size), seed=int(seed))
    chart_slot = st.empty()
    projection = fit(params, chart_slot)
    if projection is None:
        st.stop()
    frame = projection.frame

    # ------------------------------------------------------------ status line and notes
    source = (f"from the stored projection (computed in {projection.seconds:.1f} s)"
              if projection.from_cache else f"computed in {projection.seconds:.1f} s")
    st.caption(
        f"**{projection.method.upper()}** of {len(frame):,} of {projection.total_rows:,} rows "
        f"with a vector · {source}"
        + (" · stratified by category" if projection.stratified else "")
        + f" · {projection.skipped} zero or NaN vectors skipped"
    )
    if projection.note:
        st.info(projection.note)

    # ------------------------------------------------------------ colour, query
    options = ["category"] if collection.category_column else []
    options += ["cluster", *[f"metadata: {f}" for f in metadata_fields(frame)], "none"]
    left, right = st.columns([1, 3])
    colour_by = left.selectbox("Colour by", options, key="map_colour",
                               format_func=lambda o: "clusters (KMeans)" if o == "cluster" else o)
    n_clusters = 8
    if colour_by == "cluster":
        n_clusters = int(left.number_input("Clusters", 2, 40, 8, key="map_n_clusters"))
    with right.form("map_query_form"):
        qcols = st.columns([5, 1])
        query_text = qcols[0].text_input("Place a query on the map", key="map_query",
                                         placeholder="e.g. how do I keep my starter alive")
        k = int(qcols[1].number_input("top-k", 1, 50, 10, key="map_k"))
        placed = st.form_submit_button("Place query")
    if placed:
        st.session_state["map_active_query"] = (query_text, k)
    labels = colour_labels(projection, colour_by, n_clusters)

    placement: Placement | None = None
    semantic_hits = keyword_hits = None
    active = st.session_state.get("map_active_query")
    if active and active[0].strip():
        embedder = ui.embedder_for(collection)
        vector = embed_query(collection, active[0], embedder=embedder)
        placement = place_vector(projection, collection, vector)
        with ui.connection() as conn:
            semantic_hits = hybrid_search(conn, collection, active[0], embedder=embedder,
                                          k=active[1], weight=1.0, vector=vector)
            keyword_hits = hybrid_search(conn, collection, active[0], embedder=embedder,
                                         k=active[1], weight=0.0, vector=vector)
    elif placed:
        st.warning("The query is empty. Type a few words to place them on the map.")

    # ------------------------------------------------------------ selection (chart or picker)
    chart_ids = selected_from_chart()
    if chart_ids != st.session_state.get("map_last_chart_ids"):
        st.session_state["map_last_chart_ids"] = chart_ids
        if chart_ids:
            st.session_state["map_pick"] = chart_ids[0]
    titles = dict(zip(frame["id"], frame["title"], strict=True))
    if st.session_state.get("map_pick") not in titles:  # e.g. another collection or sample
        st.session_state.pop("map_pick", None)

    map_col, side = st.columns([3, 1])
    with side:
        pick = st.selectbox(
            "Selected document", list(frame["id"]), index=None, key="map_pick",
            placeholder="Click a point, or pick one here",
            format_func=lambda pid: f"{titles.get(pid) or pid} ({pid})",
        )
        neighbour_k = int(st.number_input("Neighbours", 1, 50, 10, key="map_neighbour_k"))
    neighbour_ids: list[str] = []
    neighbours = None
    if pick is not None and pick in titles:
        row_index = int(np.flatnonzero(frame["id"].to_numpy() == pick)[0])
        with ui.connection() as conn:
            neighbours = semantic_search(conn, collection, projection.vectors[row_index],
                                         k=neighbour_k + 1)
        neighbours = neighbours[neighbours["id"] != pick].head(neighbour_k)
        neighbour_ids = list(neighbours["id"])
        row = frame.iloc[row_index]
        with side:
            st.markdown(f"**{row['title'] or row['id']}**  \n`{row['category'] or '-'}`")
            st.write(str(row["snippet"]) + ("…" if len(str(row["snippet"])) >= 240 else ""))
            on_map = sum(1 for n in neighbour_ids if n in titles)
            st.caption(f"{len(neighbour_ids)} nearest neighbours by {collection.metric} distance "
                       f"(pgvector), {on_map} of them on the map (ringed):")
            # A table, not a grid: titles wrap in this narrow column instead of being cut off.
            st.table(neighbours[["title", "distance"]].assign(
                distance=[f"{d:.3f}" for d in neighbours["distance"]]).set_axis(
                    pd.RangeIndex(1, len(neighbours) + 1, name="rank")))
    if len(chart_ids) > 1:
        with side:
            st.caption(f"{len(chart_ids)} points selected with the lasso:")
            st.dataframe(frame[frame["id"].isin(chart_ids)][["title", "category"]],
                         hide_index=True, width="stretch")

    semantic_ids = list(semantic_hits["id"]) if semantic_hits is not None else None
    keyword_ids = list(keyword_hits["id"]) if keyword_hits is not None else None
    selected_ids = list(dict.fromkeys(([pick] if pick else []) + chart_ids))
    fig = figure(projection, labels, selected=selected_ids, neighbours=neighbour_ids,
                 semantic=semantic_ids, keyword=keyword_ids, query=placement)
    with map_col:
        st.plotly_chart(fig, key="map_chart", on_select="rerun",
                        selection_mode=("points", "lasso"), width="stretch")

    # ------------------------------------------------------------ query results side by side
    if placement is not None and semantic_hits is not None and keyword_hits is not None:
        st.caption(f"The query (red star) is placed by {placement.how}.")
        sem_col, kw_col = st.columns(2)
        for col, hits, label in ((sem_col, semantic_hits, "Semantic hits (red rings)"),
                                 (kw_col, keyword_hits, "Keyword hits (blue diamonds)")):
            with col:
                st.markdown(f"**{label}**")
                if hits.empty:
                    st.info("No hits (the query has no searchable words for keyword search).")
                    continue
                shown = hits[["rank", "title", "category"]].assign(
                    on_map=["yes" if h in titles else "not in the sample" for h in hits["id"]])
                st.dataframe(shown, hide_index=True, width="stretch")
        both = set(semantic_hits["id"]) & set(keyword_hits["id"])
        verb = "is" if len(both) == 1 else "are"
        st.caption(f"{len(both)} of the top {active[1]} documents {verb} found by both.")

    # ------------------------------------------------------------ downloads
    down = st.columns(2)
    down[0].download_button("Download coordinates (CSV)", coordinates_csv(projection),
                            file_name=f"{collection.name}-map.csv", mime="text/csv")
    png = render_png(projection, labels, highlight=selected_ids + neighbour_ids,
                     semantic=semantic_ids, keyword=keyword_ids, query=placement,
                     title=f"{collection.name} · {projection.method.upper()} · colour: {colour_by}")
    down[1].download_button("Download picture (PNG)", png, file_name=f"{collection.name}-map.png",
                            mime="image/png")
