"""The static site: every lesson with its views, as the served model computes them, written once as files that any
static web server serves (a static Space, GitHub Pages, a classroom laptop, a folder opened offline).

    python app.py --publish OUT_DIR [--model SOURCE ...]

site.py builds the pages from the lessons' payloads (demo/payloads.py, the same results the live app serves its
lessons from); assets/ holds the page's own script and style, written beside the Plotly library of the installed
plotly package. Nothing in the site runs Python or reaches the network.
"""
from publish.site import SiteReport, publish

__all__ = ["SiteReport", "publish"]
