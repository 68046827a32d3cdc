"""explain.canvas against Plotly's own make_subplots and go.Figure: the same grid (axis names, anchors, domains,
subplot titles, shared and secondary axes), and the same figure once traces and updates are added."""
from __future__ import annotations

import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from explain.canvas import SUBPLOT_TITLE, subplots
from explain.common import SUBPLOT_TITLE_SIZE

GRIDS = [  # the grids the views draw
    dict(rows=4, cols=1, row_heights=[0.44, 0.18, 0.19, 0.19], specs=[[{}], [{}], [{"secondary_y": True}], [{}]],
         vertical_spacing=0.07, subplot_titles=["a", "b", "c", "d"]),
    dict(rows=1, cols=3, column_widths=[0.34, 0.33, 0.33], horizontal_spacing=0.07, subplot_titles=["a", "b", "c"]),
    dict(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], vertical_spacing=0.3, subplot_titles=["a", "b", "c"]),
    dict(rows=2, cols=3, horizontal_spacing=0.05, vertical_spacing=0.16, column_widths=[2, 1, 1],
         row_heights=[0.42, 0.58], specs=[[{}, {}, {}], [{"colspan": 3}, None, None]],
         subplot_titles=["a", "b", "c", "band"]),
    dict(rows=2, cols=1, row_heights=[0.62, 0.38], vertical_spacing=0.14, shared_xaxes=True,
         subplot_titles=["a", "b"]),
    dict(rows=1, cols=2, subplot_titles=("cos", "sin"), horizontal_spacing=0.08),
    dict(rows=2, cols=1),  # Plotly's default spacings
]


def axes(layout: dict) -> dict:
    return {k: v for k, v in layout.items() if k[1:5] == "axis"}


@pytest.mark.parametrize("grid", GRIDS, ids=range(len(GRIDS)))
def test_the_grid_is_make_subplots_grid(grid):
    ours = subplots(**grid).figure().to_dict()["layout"]
    theirs = make_subplots(**grid).to_dict()["layout"]
    assert axes(ours).keys() == axes(theirs).keys()
    for name, axis in axes(theirs).items():
        assert {k: v for k, v in axes(ours)[name].items() if k != "domain"} == \
               {k: v for k, v in axis.items() if k != "domain"}, name
        assert axes(ours)[name].get("domain") == pytest.approx(axis.get("domain"), abs=1e-12), name
    mine = [a for a in ours.get("annotations", [])]
    assert [a["text"] for a in mine] == [a["text"] for a in theirs.get("annotations", [])]
    for a, b in zip(mine, theirs.get("annotations", [])):
        assert (a["x"], a["y"]) == pytest.approx((b["x"], b["y"]), abs=1e-12)
        assert a["name"] == SUBPLOT_TITLE and a["font"]["size"] == SUBPLOT_TITLE_SIZE
        assert {k: a[k] for k in ("xanchor", "yanchor", "xref", "yref", "showarrow")} == \
               {k: b[k] for k in ("xanchor", "yanchor", "xref", "yref", "showarrow")}


def test_traces_and_updates_land_where_plotly_puts_them():
    grid = GRIDS[0]
    ours, theirs = subplots(**grid), make_subplots(**grid)
    for fig in (ours, theirs):
        fig.add_trace(go.Bar(x=[1, 2], y=[3, 4]), row=2, col=1)
        fig.add_trace(go.Scatter(x=[1, 2], y=[0.1, 0.2]), row=3, col=1, secondary_y=True)
        fig.add_trace(go.Scatter(x=[1, 2], y=[5, 6]), row=4, col=1)
        fig.update_xaxes(dict(tickmode="array", tickvals=[1, 2]), title_text="x", row=4, col=1)
        fig.update_yaxes(title_text="p", range=[0, 1], row=3, col=1, secondary_y=True)
        fig.update_yaxes(type="log", row=4, col=1)
        fig.update_layout(dict(height=900, legend=dict(orientation="h")), margin_t=77, title_text="T")
        fig.update_layout(legend=dict(y=-0.1))
        fig.add_vline(x=1.5, line=dict(color="black"), row=2, col=1)
    a, b = ours.figure().to_dict(), theirs.to_dict()
    assert [(t["type"], t.get("xaxis"), t.get("yaxis")) for t in a["data"]] == \
           [(t["type"], t.get("xaxis"), t.get("yaxis")) for t in b["data"]]
    for key in ("xaxis4", "yaxis4", "yaxis5", "legend", "margin", "height", "title", "shapes"):
        ours_, theirs_ = a["layout"][key], b["layout"][key]
        if key[1:5] == "axis":  # domains: compared (to 1e-12) above
            ours_, theirs_ = ({k: v for k, v in d.items() if k != "domain"} for d in (ours_, theirs_))
        assert ours_ == theirs_, key


def test_update_traces_with_a_selector_and_bad_cells():
    fig = subplots(rows=1, cols=2)
    fig.add_trace(go.Heatmap(z=[[1]]), row=1, col=1).add_trace(go.Bar(y=[1]), row=1, col=2)
    fig.update_traces(selector=dict(type="heatmap"), showscale=False)
    assert fig.data[0].showscale is False and fig.data[1].marker.color is None
    with pytest.raises(ValueError, match="no subplot"):
        fig.add_trace(go.Bar(y=[1]), row=2, col=1)
    with pytest.raises(ValueError, match="no secondary y"):
        fig.add_trace(go.Bar(y=[1]), row=1, col=1, secondary_y=True)
