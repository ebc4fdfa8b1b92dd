"""The in-place chart's server side: the figures it is handed and the plotly.js the page serves it."""
import json
import logging

import plotly.graph_objects as go
import plotly.offline

from deeprnn import webchart


def test_plotly_js_is_written_once_readable_by_the_server_and_rewritten_when_it_differs(tmp_path):
    static = tmp_path / "static"
    assert webchart.publish_plotly(static)
    served = static / webchart.PLOTLY_FILE
    assert served.read_text() == plotly.offline.get_plotlyjs()
    assert served.stat().st_mode & 0o777 == 0o644  # not the temporary file's owner-only mode
    written = served.stat().st_mtime_ns
    assert webchart.publish_plotly(static)
    assert served.stat().st_mtime_ns == written  # the same file is left alone
    served.write_text("an older plotly.js")
    assert webchart.publish_plotly(static)
    assert served.read_text() == plotly.offline.get_plotlyjs()


def test_a_static_folder_that_cannot_be_made_leaves_the_page_on_its_fallback_with_the_reason_logged(tmp_path, caplog):
    blocked = tmp_path / "static"
    blocked.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="deeprnn.webchart"):
        assert not webchart.publish_plotly(blocked)
    assert str(blocked / webchart.PLOTLY_FILE) in caplog.text


def test_a_figure_reaches_the_chart_whole_in_the_pages_look():
    figure = go.Figure(go.Scatter(x=[1, 2], y=[3.5, 4.0], name="train"), layout=dict(height=340, uirevision="curves"))
    spec = json.loads(webchart.figure_json(figure))
    assert spec["data"] == [{"type": "scatter", "x": [1, 2], "y": [3.5, 4.0], "name": "train"}]
    assert spec["layout"]["height"] == 340 and spec["layout"]["uirevision"] == "curves"
    assert spec["layout"]["template"]["layout"]["font"]["family"].startswith('"Source Sans"')
