"""A Plotly chart for the page that takes each new figure in place, and the plotly.js it loads.

st.plotly_chart names a chart by its figure, so each new figure mounts a new chart, which the browser
then draws afresh twice (the second time when Streamlit hands Plotly a new config for its full-screen
button), and a zoom or pan was lost with each new figure. This chart keeps its place and hands each new
figure to Plotly.react, which draws it into the chart on screen and keeps the user's zoom and pan
(each figure's uirevision, in charts.py, says when they should go). The page mounts it as a Streamlit component (in
dashboard.py: no streamlit here); Streamlit serves the plotly.js of the installed plotly package from the
app's static folder (server.enableStaticServing in .streamlit/config.toml).
"""
from __future__ import annotations

import logging
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline

from .atomic import write_atomically

log = logging.getLogger(__name__)
PLOTLY_FILE = "plotly.min.js"
# The page's look, which st.plotly_chart's theme gave the charts: Streamlit's font and text colour, white
# behind the plot, light grid lines, no tick marks (without a template's word Plotly draws them outside:
# a comb of dashes down each heatmap's side).
AXIS_LOOK = dict(gridcolor="#e6eaf1", zerolinecolor="#d5dae5", linecolor="#d5dae5", ticks="")
PAGE_TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family='"Source Sans", sans-serif', color="#31333F"), paper_bgcolor="white", plot_bgcolor="white",
    xaxis=AXIS_LOOK, yaxis=AXIS_LOOK,
    hoverlabel=dict(font=dict(family='"Source Sans", sans-serif')))).to_plotly_json()

CHART_JS = """
const PLOTLY_URL = "./app/static/%(plotly_file)s";
const CONFIG = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"]};

// One load of plotly.js per page, shared by every chart on it.
function plotly() {
    window.deeprnnPlotly ??= new Promise((resolve, reject) => {
        const script = Object.assign(document.createElement("script"), {src: PLOTLY_URL});
        script.onload = () => resolve(window.Plotly);
        script.onerror = () => reject(new Error(`${PLOTLY_URL} could not be loaded`));
        document.head.appendChild(script);
    });
    return window.deeprnnPlotly;
}

// Called at the chart's mount and again with each new figure (the JSON of a plotly figure).
export default function ({parentElement, data}) {
    let chart = parentElement.querySelector(".deeprnn-chart");
    if (!chart) {
        chart = parentElement.appendChild(Object.assign(document.createElement("div"), {className: "deeprnn-chart"}));
    }
    chart.deeprnnFigure = data;  // the newest figure: one still waiting for plotly.js is then skipped
    plotly().then(Plotly => {
        if (chart.deeprnnFigure !== data) return;
        const figure = JSON.parse(data);
        return Plotly.react(chart, figure.data, figure.layout, CONFIG);
    }).catch(err => { chart.textContent = `This chart could not be drawn: ${err.message}.`; });
    return () => window.Plotly?.purge(chart);
}
""" % {"plotly_file": PLOTLY_FILE}


def figure_json(figure: go.Figure) -> str:
    """What the chart takes: the figure as JSON in the page's look (unvalidated: the builders in
    charts.py made it)."""
    spec = figure.to_plotly_json()
    spec["layout"]["template"] = PAGE_TEMPLATE
    return pio.to_json(spec, validate=False)


def publish_plotly(static_dir: Path) -> bool:
    """Write the installed plotly package's plotly.js into the app's static folder, unless the same file
    is there already. False, with the reason in the log, where it cannot be written."""
    source = plotly.offline.get_plotlyjs().encode()
    target = static_dir / PLOTLY_FILE
    try:
        if not (target.is_file() and target.read_bytes() == source):
            static_dir.mkdir(exist_ok=True)
            write_atomically(target, lambda f: f.write(source))
            target.chmod(0o644)  # the temporary file's mode was the owner's alone
    except OSError as err:
        log.warning("the charts are drawn afresh at each change: %s could not be written (%s)", target, err)
        return False
    return True
