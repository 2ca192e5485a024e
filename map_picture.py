"""The embedding map as a picture: a PNG drawn server-side with Pillow (no browser or kaleido
needed), and the palette the interactive map shares with it."""

from __future__ import annotations

import io

import numpy as np

from vecdash.projection import Placement, Projection

PALETTE = [
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6",
    "#9d755d", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
]


def render_png(
    projection: Projection,
    labels: list[str] | None = None,
    *,
    highlight: list[str] | None = None,
    query: Placement | None = None,
    title: str = "",
    width: int = 1400,
    height: int = 1000,
    legend_max: int = 16,
) -> bytes:
    """The map as a PNG, drawn server-side with Pillow (no browser or kaleido needed): points
    coloured by ``labels``, highlighted ids ringed, the query as a star, a legend."""
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
    marked = set(highlight or [])
    if marked:
        for (x, y), pid in zip(coords, projection.frame["id"], strict=False):
            if pid in marked:
                px, py = to_px(float(x), float(y))
                draw.ellipse((px - 8, py - 8, px + 8, py + 8), outline="black", width=2)
    if query is not None:
        px, py = to_px(query.x, query.y)
        star = []
        for i in range(10):
            angle = np.pi / 2 + i * np.pi / 5
            rad = 14 if i % 2 == 0 else 6
            star.append((px + rad * float(np.cos(angle)), py - rad * float(np.sin(angle))))
        draw.polygon(star, fill="#d62728", outline="black")
    lx, ly = width - legend_w, top
    for name in order[:legend_max]:
        draw.ellipse((lx, ly + 4, lx + 10, ly + 14), fill=colour[name])
        draw.text((lx + 18, ly), str(name)[:30], fill="black", font=small)
        ly += 20
    if len(order) > legend_max:
        draw.text((lx, ly), f"… {len(order) - legend_max} more", fill="black", font=small)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

