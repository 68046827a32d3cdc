"""What a user downloads from the Inside-forward tab: a view's table as CSV, and every view of a run in one zip (CSV,
an HTML page with its camera icon, a PNG where a browser can draw one, and the Plotly library the pages load)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import plotly.offline

from explain.common import ViewResult, csv_text
from rules.png import PngError, figure_png, unavailable as png_unavailable


def write_csv(view: ViewResult, path: Path) -> Path:
    """The view's whole table (full precision), as CSV at `path`."""
    path.write_text(csv_text(view.df), encoding="utf-8", newline="")
    return path


def views_zip(views: list[ViewResult], path: Path, png_scale: int) -> tuple[int, PngError | None]:
    """Write the zip of `views` at `path`. Returns how many PNGs it holds and, when there are fewer than views, why:
    after the first PNG that fails no more are tried, so the zip comes soon."""
    failed, pngs = png_unavailable(), 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i, v in enumerate(views):
            z.writestr(f"{i:02d}-{v.name}.csv", csv_text(v.df))
            page = io.StringIO()
            v.fig.write_html(page, include_plotlyjs="directory", full_html=True)
            z.writestr(f"{i:02d}-{v.name}.html", page.getvalue())
            if failed is None:
                try:
                    z.writestr(f"{i:02d}-{v.name}.png", figure_png(v.fig, scale=png_scale))
                    pngs += 1
                except PngError as e:
                    failed = e
        z.writestr("plotly.min.js", plotly.offline.get_plotlyjs())
    return pngs, failed
