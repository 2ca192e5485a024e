"""The embedding map as a picture: a PNG drawn server-side with Pillow (no browser or kaleido
needed), and the palette the interactive map shares with it."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from vecdash.projection import Placement, Projection

PALETTE = [
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6",
    "#9d755d", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
]


Mark = Callable[[Any, float, float, float], None]  # draws one mark centred at (x, y), radius r


def draw_black_ring(draw: Any, x: float, y: float, r: float) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), outline="black", width=2)


def draw_red_ring(draw: Any, x: float, y: float, r: float) -> None:
    r += 2  # outside the black ring when a point is both
    draw.ellipse((x - r, y - r, x + r, y + r), outline="#d62728", width=2)


def draw_blue_diamond(draw: Any, x: float, y: float, r: float) -> None:
    draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], outline="#1f77b4", width=2)


def draw_red_star(draw: Any, x: float, y: float, r: float) -> None:
    points = []
    for i in range(10):
        angle = np.pi / 2 + i * np.pi / 5
        rad = r if i % 2 == 0 else r * 0.43
        points.append((x + rad * float(np.cos(angle)), y - rad * float(np.sin(angle))))
    draw.polygon(points, fill="#d62728", outline="black")


def render_png(
    projection: Projection,
    labels: list[str] | None = None,
    *,
    highlight: list[str] | None = None,
    semantic: list[str] | None = None,
    keyword: list[str] | None = None,
    query: Placement | None = None,
    title: str = "",
    width: int = 1400,
    height: int = 1000,
    legend_max: int = 16,
) -> bytes:
    """The map as a PNG, drawn server-side with Pillow (no browser or kaleido needed): points
    coloured by ``labels``; as on the interactive map, ``highlight`` ids (the selection and its
    neighbours) in black rings, ``semantic`` hits in red rings, ``keyword`` hits in blue
    diamonds, the query as a red star; a legend of the colours and of every mark drawn."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=16)
    small = ImageFont.load_default(size=13)
    legend_w, margin, top = 260, 30, 50
    plot = (margin, top, width - legend_w - margin, height - margin)
    draw.text((margin, 14), title or f"{projection.collection} · {projection.method}", fill="black",
              font=font)
    draw.rectangle(plot, outline="#cccccc")
    coords = projection.coords
    points = coords if query is None else np.vstack([coords, [[query.x, query.y]]])
    if len(points):
        lo, hi = points.min(axis=0), points.max(axis=0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
    else:
        lo, span = np.zeros(2), np.ones(2)

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = plot[0] + 12 + (x - lo[0]) / span[0] * (plot[2] - plot[0] - 24)
        py = plot[3] - 12 - (y - lo[1]) / span[1] * (plot[3] - plot[1] - 24)
        return float(px), float(py)

    names = labels or ["points"] * len(coords)
    order = list(dict.fromkeys(names))
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(order)}
    r = 3 if len(coords) > 2000 else 4
    for (x, y), name in zip(coords, names, strict=False):
        px, py = to_px(float(x), float(y))
        draw.ellipse((px - r, py - r, px + r, py + r), fill=colour[name])
    position = {pid: i for i, pid in enumerate(projection.frame["id"])}

    def centres(pids: list[str] | None) -> list[tuple[float, float]]:
        rows = [position[p] for p in dict.fromkeys(pids or []) if p in position]
        return [to_px(float(coords[i][0]), float(coords[i][1])) for i in rows]

    marks: list[tuple[str, Mark]] = []
    for name, pids, mark in (("selected / neighbours", highlight, draw_black_ring),
                             ("semantic hits", semantic, draw_red_ring),
                             ("keyword hits", keyword, draw_blue_diamond)):
        drawn = centres(pids)
        for px, py in drawn:
            mark(draw, px, py, 8 if mark is not draw_blue_diamond else 9)
        if drawn:
            marks.append((name, mark))
    if query is not None:
        px, py = to_px(query.x, query.y)
        draw_red_star(draw, px, py, 14)
        marks.append(("query", draw_red_star))
    lx, ly = width - legend_w, top
    for name in order[:legend_max]:
        draw.ellipse((lx, ly + 4, lx + 10, ly + 14), fill=colour[name])
        draw.text((lx + 18, ly), str(name)[:30], fill="black", font=small)
        ly += 20
    if len(order) > legend_max:
        draw.text((lx, ly), f"… {len(order) - legend_max} more", fill="black", font=small)
        ly += 20
    ly += 12
    for name, legend_mark in marks:
        legend_mark(draw, lx + 5, ly + 9, 7)
        draw.text((lx + 18, ly), name, fill="black", font=small)
        ly += 22
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

