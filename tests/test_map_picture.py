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
