"""The plot builders: what each figure draws, from data alone."""
import html
import re
from dataclasses import replace

import numpy as np

from deeprnn import charts
from deeprnn.config import RunConfig
from deeprnn.snapshot import Probe, Snapshot


def report(step: int, ppl: float) -> dict:
    return {"step": step, "tokens": step * 1000, "seconds": step / 10, "ppl": ppl, "loss": float(np.log(ppl))}


def run_snapshot(metrics=(), evals=(), events=(), best=None) -> Snapshot:
    return Snapshot(1, "LSTM x2", RunConfig(), "running", metrics=tuple(metrics), evals=tuple(evals),
                    events=tuple(events), best=best)


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_a_run_without_points_gets_empty_axes_and_its_first_point_is_visible():
    empty = charts.curves_figure(run_snapshot())
    assert list(trace(empty, "train").x) == []
    assert not empty.layout.xaxis.showticklabels and not empty.layout.yaxis.showticklabels
    first = charts.curves_figure(run_snapshot([report(1, 27.0)]))
    train = trace(first, "train")
    assert list(train.y) == [27.0] and "markers" in train.mode  # a line alone would draw nothing
    assert first.layout.xaxis.showticklabels and first.layout.yaxis.showticklabels
    many = [report(step, 10.0) for step in range(1, charts.MARKED_CURVE_POINTS + 1)]
    assert trace(charts.curves_figure(run_snapshot(many)), "train").mode == "lines"


def test_curves_draw_train_and_held_out_marking_the_kept_best_and_the_events():
    metrics = [report(step, 20.0 / step) for step in range(1, 11)]
    evals = [{"step": 5, "tokens": 5000, "seconds": 0.5, "val_ppl": 6.0, "val_loss": np.log(6.0)},
             {"step": 10, "tokens": 10000, "seconds": 1.0, "val_ppl": 7.0, "val_loss": np.log(7.0)}]
    snap = run_snapshot(metrics, evals, events=[{"step": 3, "kind": "lr", "value": 0.5}],
                        best={"val_ppl": 6.0, "step": 5, "tokens": 5000})
    fig = charts.curves_figure(snap, x="seconds", metric="loss", log_y=False)
    assert list(trace(fig, "held-out").x) == [0.5, 1.0]
    assert list(trace(fig, "kept best").y) == [np.log(6.0)]
    assert [a.text for a in fig.layout.annotations] == ["lr 0.5"]
    assert fig.layout.annotations[0].x == 0.3  # the first report at or after the event's step
    assert fig.layout.yaxis.type == "linear"


def test_labels_of_close_events_merge_into_the_newest_one_and_every_event_keeps_its_line():
    """Stepping the lr slider through values in a few steps printed their labels over each other."""
    metrics = [report(step, 5.0) for step in range(1, 101)]  # 100,000 tokens: labels 8,000 apart at least
    burst = [{"step": 50 + i, "kind": "lr", "value": v} for i, v in enumerate([0.1, 0.2, 0.5, 1.0])]
    events = [{"step": 10, "kind": "lr", "value": 0.01}, {"step": 40, "kind": "lr", "value": 0.02}, *burst,
              {"step": 55, "kind": "clip", "value": 2.0}, {"step": 90, "kind": "lr", "value": 0.05}]
    fig = charts.curves_figure(run_snapshot(metrics, events=events))
    assert [(a.text, a.x) for a in fig.layout.annotations] == [
        ("lr 0.01", 10_000), ("lr 0.02", 40_000), ("lr 1, clip 2", 55_000), ("lr 0.05", 90_000)]
    assert len(fig.layout.shapes) == len(events)


def test_log_axes_write_the_labels_between_decades_in_full():
    """Plotly's default labels 20 and 30 on a log axis as "2" and "3", which reads as a wrong scale."""
    spanning = run_snapshot([report(1, 27.0), report(2, 4.0)])
    gradients = [dict(report(1, 27.0), grad_norm=2.0, grad_ih=[0.05], grad_hh=[0.003])]
    for fig in (charts.curves_figure(spanning), charts.comparison_figure([spanning]),
                charts.gradient_figure(gradients)):
        assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.minorloglabels == "complete"


def test_the_comparison_names_each_curve_and_whether_it_is_held_out_or_train():
    """Plotly hides the legend of a lone trace, and with it the one word saying which perplexity it is."""
    held_out = run_snapshot([report(1, 27.0)], evals=[{"step": 1, "tokens": 1000, "seconds": 0.1, "val_ppl": 9.0}])
    fig = charts.comparison_figure([run_snapshot([report(1, 27.0), report(2, 4.0)])])
    assert fig.layout.showlegend and [t.name for t in fig.data] == ["#1 LSTM x2 (train)"]
    assert [t.name for t in charts.comparison_figure([held_out]).data] == ["#1 LSTM x2 (held-out)"]


def test_gradient_flow_has_a_legend_entry_per_layer_for_both_its_lines():
    """Two entries per layer on the side scrolled out of sight with 8 layers."""
    rows = [dict(report(step, 5.0), grad_norm=1.0, grad_ih=[0.1] * 8, grad_hh=[0.05] * 8) for step in (1, 2)]
    fig = charts.gradient_figure(rows)
    assert [t.name for t in fig.data if t.showlegend is not False] == ["global (before clipping)",
                                                                     *(f"layer {k}" for k in range(1, 9))]
    recurrent = trace(fig, "layer 8 recurrent")
    assert recurrent.legendgroup == trace(fig, "layer 8").legendgroup and recurrent.line.dash == "dash"
    assert list(recurrent.y) == [0.05, 0.05]


def test_long_curves_are_thinned_for_drawing_keeping_both_ends():
    metrics = [report(step, 5.0) for step in range(1, 10_001)]
    drawn = trace(charts.curves_figure(run_snapshot(metrics)), "train")
    assert len(drawn.x) == charts.MAX_CURVE_POINTS
    assert drawn.x[0] == 1000 and drawn.x[-1] == 10_000 * 1000


def test_unit_text_colours_each_token_by_sign_and_writes_words_with_their_spaces():
    markup = charts.unit_text_html(["the", "time", "<b>"], [0.5, -1.5, 0.0], separator=" ")
    text = re.sub(r"<[^>]+>", "", markup)
    assert html.unescape(text) == "the time <b>"  # a token is text, never markup
    assert markup.count("<span") == 3 and 'title="-1.500"' in markup
    assert "rgba(214,39,40,0.50)" in markup and "rgba(31,119,180,1.00)" in markup  # red above 0, blue below, capped


def test_a_long_probe_is_drawn_a_readable_window_at_a_time():
    """500 characters drawn at once ran together into one grey smear under the heatmaps."""
    rng = np.random.default_rng(0)
    long_text = ("the time traveller for so it will be convenient to speak of him " * 5)[:300]
    probe = Probe(3, tuple(long_text), (rng.uniform(-1, 1, (300, 40)),) * 2, None, ({}, {}))
    first = charts.heatmaps_figure(probe, "hidden", max_units=8)
    later = charts.heatmaps_figure(probe, "hidden", max_units=8, start=150)
    window = charts.STRIP_CHARS
    assert first.layout.xaxis2.range == (-0.5, window - 0.5) and later.layout.xaxis2.range == (149.5, 149.5 + window)
    assert "".join(later.data[-1].text).replace("␣", " ") == long_text[150:150 + window]
    assert np.allclose(later.data[1].z, probe.hidden[0][150:150 + window, charts.choose_units(probe.hidden[0], 8)].T)
    assert later.data[1].y == first.data[1].y  # the units are chosen over the whole text: they stay as it moves
    whole = charts.heatmaps_figure(replace(probe, tokens=probe.tokens[:63], hidden=(probe.hidden[0][:63],) * 2))
    assert whole.layout.xaxis2.range == (-0.5, 62.5)
    words = long_text.split()
    assert charts.window_end(words[:12]) == 12  # the default probe's words, all of them
    shown = charts.window_end(words)
    assert 12 < shown < len(words) and sum(len(w) + 1 for w in words[:shown]) <= charts.STRIP_CHARS


def test_heatmaps_put_layer_one_at_the_bottom_and_label_every_probe_character():
    rng = np.random.default_rng(0)
    tokens = tuple("the time")
    hidden = (rng.uniform(-1, 1, (8, 40)), rng.uniform(-1, 1, (8, 40)) * 0.1)
    hidden[0][:, 7] *= 0  # a unit that never changes is never among the most active
    probe = Probe(3, tokens, hidden, None, ({}, {}))
    fig = charts.heatmaps_figure(probe, "hidden", max_units=16)
    top, bottom, strip = fig.data
    assert np.allclose(bottom.z, hidden[0][:, charts.choose_units(hidden[0], 16)].T)
    assert "u7" not in bottom.y and len(bottom.y) == 16
    assert fig.layout.annotations[0].text.startswith("layer 2") and top.zmax == 1.0
    assert strip.text == ("t", "h", "e", "␣", "t", "i", "m", "e") and strip.x == tuple(range(8))
    top_panel, bottom_panel, strip_panel = fig.layout.yaxis.domain, fig.layout.yaxis2.domain, fig.layout.yaxis3.domain
    assert 0 <= strip_panel[0] < strip_panel[1] < bottom_panel[0] < bottom_panel[1] < top_panel[0] < top_panel[1] <= 1
    assert fig.layout.xaxis.matches == fig.layout.xaxis3.matches == "x2"  # one shared x axis, the tokens' strip too
    assert fig.layout.xaxis2.range == (-0.5, 7.5) and fig.layout.annotations[0].y == top_panel[1]
