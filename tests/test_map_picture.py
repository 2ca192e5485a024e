"""The map picture (map_picture.render_png): a PNG of a projection drawn with Pillow, points
coloured by label, highlighted ids ringed, the query as a star. No database: the projection is
built in memory."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from map_picture import PALETTE, render_png
from vecdash.projection import Placement, Projection, ProjectionParams


def projection(n: int = 200, *, clusters: int = 4) -> tuple[Projection, list[str]]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, clusters, n)
    coords = (rng.normal(size=(clusters, 2)) * 5)[labels] + rng.normal(size=(n, 2))
    frame = pd.DataFrame({
        "id": [f"d{i}" for i in range(n)],
        "x": coords[:, 0].astype(np.float32),
        "y": coords[:, 1].astype(np.float32),
        "title": [f"doc {i}" for i in range(n)],
        "snippet": [f"document {i}" for i in range(n)],
        "category": [f"c{label}" for label in labels],
        "metadata": [{} for _ in range(n)],
    })
    made = Projection("synthetic", ProjectionParams(method="pca"), "1", "pca", "", frame,
                      np.zeros((n, 2), dtype=np.float32), n, 0, 0.0)
    return made, [str(label) for label in labels]


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_png() -> None:
    made, labels = projection()
    png = render_png(made, labels, highlight=list(made.frame["id"][:3]),
                     query=Placement(0.0, 0.0, "test"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert image.format == "PNG" and image.size == (1400, 1000)
    drawn = {colour for _, colour in Image.open(io.BytesIO(png)).convert("RGB").getcolors(1 << 20)}
    assert {rgb(c) for c in PALETTE[:4]} <= drawn  # one colour per label
    assert rgb("#d62728") in drawn  # the query's star


def legend_strip(png: bytes) -> Image.Image:
    """The legend column of the picture (right of the plot)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return image.crop((image.width - 260, 0, image.width, image.height))


def colours(image: Image.Image) -> set[tuple[int, int, int]]:
    return {colour for _, colour in image.getcolors(1 << 20)}


def test_png_draws_keyword_diamonds_and_a_legend_of_its_marks() -> None:
    """The downloaded picture shows what the interactive map shows: keyword hits as blue
    diamonds, semantic hits as red rings, and the legend names the rings, diamonds and star."""
    made, labels = projection(clusters=2)  # two label colours, neither blue nor red
    ids = list(made.frame["id"])
    plain = render_png(made, labels)
    marked = render_png(made, labels, highlight=ids[:2], semantic=ids[2:5], keyword=ids[5:9],
                        query=Placement(0.0, 0.0, "test"))
    blue, red = rgb("#1f77b4"), rgb("#d62728")
    assert blue not in colours(Image.open(io.BytesIO(plain)).convert("RGB"))
    assert blue in colours(Image.open(io.BytesIO(marked)).convert("RGB"))  # the diamonds
    # Legend: nothing but the label colours without marks; the marks' own colours with them.
    assert not {blue, red} & colours(legend_strip(plain))
    assert {blue, red, (0, 0, 0)} <= colours(legend_strip(marked))
    legend_only_keyword = render_png(made, labels, keyword=ids[5:9])
    assert blue in colours(legend_strip(legend_only_keyword))
    assert red not in colours(legend_strip(legend_only_keyword))
