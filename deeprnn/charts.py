"""Plot builders: data in, plotly figure out. No streamlit, no state, so each one is testable."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .introspect import layer_saturation

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#393b79", "#637939")
X_AXES = {"tokens": "tokens seen", "seconds": "training seconds"}
METRICS = {"ppl": ("perplexity", "ppl", "val_ppl"), "loss": ("loss (nats per token)", "loss", "val_loss")}
MAX_CURVE_POINTS = 1500
# Below this many points a curve also draws its markers: a line of one point is invisible.
MARKED_CURVE_POINTS = 30
HEATMAP_SCALE = "RdBu_r"
# Each figure sets margins that hold its tick labels, axis titles, legend and colour bar. Where they do not
# fit, Plotly measures them, widens the margins and lays the figure out again at each redraw; the curves'
# draw took 27 ms in Chromium instead of 9 (bench/view_cost.py, session 30).


def _thin(rows: tuple, limit: int = MAX_CURVE_POINTS) -> tuple:
    """At most `limit` evenly spaced rows, always keeping the newest (what is drawn, not trained)."""
    if len(rows) <= limit:
        return rows
    index = np.linspace(0, len(rows) - 1, limit).round().astype(int)
    return tuple(rows[i] for i in index)


def curves_figure(snapshot, x: str = "tokens", metric: str = "ppl", log_y: bool = True) -> go.Figure:
    """Train and held-out curves of one run, learning-rate changes and the kept best point marked.

    Assembled from plain dicts in one Figure call (as every builder here that the page redraws each
    second): plotly's incremental add_* and update_* calls cost several times the Python.
    """
    title, train_key, val_key = METRICS[metric]
    train = _thin(snapshot.metrics)
    traces = [dict(type="scatter", x=[r[x] for r in train], y=[r[train_key] for r in train],
                   mode="lines+markers" if len(train) < MARKED_CURVE_POINTS else "lines",
                   name="train", line=dict(color=PALETTE[0]))]
    if snapshot.evals:
        traces.append(dict(type="scatter", x=[r[x] for r in snapshot.evals], y=[r[val_key] for r in snapshot.evals],
                           mode="lines+markers", name="held-out", line=dict(color=PALETTE[1])))
    traces += _best_marker(snapshot, x, val_key)
    lines, labels = _event_marks(snapshot, x)
    scaled = bool(train)  # without points, plotly's made-up scale (0 to 6 tokens) would be all there is to read
    return go.Figure(data=traces, layout=dict(
        xaxis=dict(title=dict(text=X_AXES[x]), showticklabels=scaled),
        yaxis=dict(_value_axis(title, log_y), showticklabels=scaled),
        shapes=lines, annotations=labels, uirevision=f"curves-{x}-{metric}-{log_y}", height=340,
        margin=dict(l=80, r=40, t=60, b=70), legend=dict(orientation="h", yanchor="bottom", y=1.07, x=0),
        hovermode="x unified"))


def _value_axis(title: str, log_y: bool) -> dict:
    """A value axis (perplexity, loss, gradient norm). On a log axis spanning more than a decade plotly
    labels 20 and 30, or 0.02 and 0.05, as single small digits "2", "3", "5"; "complete" writes them out."""
    if not log_y:
        return dict(title=dict(text=title), type="linear")
    return dict(title=dict(text=title), type="log", minorloglabels="complete")


def _event_x(snapshot, step: int, x: str):
    """Where on the x axis a step falls, from the nearest report point at or after it."""
    for row in snapshot.metrics:
        if row["step"] >= step:
            return row[x]
    return snapshot.metrics[-1][x] if snapshot.metrics else None


def _event_marks(snapshot, x: str) -> tuple[list, list]:
    """A dotted vertical line for each event (lr change, clip, divergence) and labels over them. A
    slider stepped through values makes a burst of events whose labels would print over each other,
    so a label also speaks for the older events less than LABEL_GAP to its left: it shows the newest
    value of each kind among them."""
    marks = []
    for event in snapshot.events:
        at = _event_x(snapshot, event["step"], x)
        if at is not None:
            marks.append((at, event["kind"], _event_label(event)))
    lines = [dict(type="line", x0=at, x1=at, xref="x", y0=0, y1=1, yref="y domain",
                  line=dict(color="#888", dash="dot", width=1)) for at, _, _ in marks]
    gap = LABEL_GAP * (snapshot.metrics[-1][x] if snapshot.metrics else 0)
    spoken = []  # [x, {kind: label}], newest first
    for at, kind, label in reversed(marks):
        if spoken and spoken[-1][0] - at <= gap:
            spoken[-1][1].setdefault(kind, label)
        else:
            spoken.append([at, {kind: label}])
    labels = [dict(x=at, y=1, yref="paper", text=", ".join(reversed(texts.values())), showarrow=False,
                   yanchor="bottom", font=dict(size=10, color="#555")) for at, texts in reversed(spoken)]
    return lines, labels


# As a fraction of the x axis: about the width of a label ("lr 0.005") on the page's curves chart.
LABEL_GAP = 0.08


def _event_label(event) -> str:
    return {"lr": f"lr {event['value']:g}", "clip": f"clip {event['value']:g}", "temperature": f"T {event['value']:g}",
            "diverged": "diverged"}.get(event["kind"], event["kind"])


def _best_marker(snapshot, x: str, val_key: str) -> list:
    best = snapshot.best
    match = [r for r in snapshot.evals if best and r["step"] == best["step"]]
    if not match:
        return []
    return [dict(type="scatter", x=[match[0][x]], y=[match[0][val_key]], mode="markers", name="kept best",
                 marker=dict(symbol="star", size=14, color="#f2b600", line=dict(color="#000", width=1)))]


def comparison_figure(snapshots, x: str = "tokens", log_y: bool = True) -> go.Figure:
    """Held-out perplexity (train where a run has no held-out split) of several runs, overlaid."""
    traces = []
    for i, snap in enumerate(snapshots):
        rows, key, kind = (snap.evals, "val_ppl", "held-out") if snap.evals else (_thin(snap.metrics), "ppl", "train")
        traces.append(dict(type="scatter", x=[r[x] for r in rows], y=[r[key] for r in rows], mode="lines",
                           name=f"#{snap.run_id} {snap.name} ({kind})", line=dict(color=PALETTE[i % len(PALETTE)])))
    return go.Figure(data=traces, layout=dict(
        xaxis=dict(title=dict(text=X_AXES[x])), yaxis=_value_axis("perplexity", log_y),
        uirevision=f"compare-{x}-{log_y}", height=340, margin=dict(l=80, r=40, t=30, b=100),
        showlegend=True, legend=dict(orientation="h", y=-0.25, x=0)))  # one run too: it says held-out or train


def choose_units(layer_states: np.ndarray, count: int, how: str = "most active") -> np.ndarray:
    """Which hidden units to draw when there are too many: the first ones, or those that vary most."""
    hidden = layer_states.shape[1]
    if hidden <= count:
        return np.arange(hidden)
    if how == "first":
        return np.arange(count)
    return np.sort(np.argsort(layer_states.std(axis=0))[::-1][:count])


def heatmaps_figure(probe, states: str = "hidden", max_units: int = 32, how: str = "most active",
                    start: int = 0) -> go.Figure:
    """Hidden (or LSTM cell) states per layer over the probe text, on one shared scale."""
    layers = probe.hidden if states == "hidden" else probe.cell
    limit = 1.0 if states == "hidden" else max(1.0, float(max(np.abs(s).max() for s in layers)))
    return layer_heatmaps(layers, probe.tokens, states, -limit, limit, max_units, how, start=start)


GATE_RANGES = {"candidate": (-1.0, 1.0), "preactivation": None}


def gates_figure(probe, gate: str, max_units: int = 32, how: str = "most active", start: int = 0) -> go.Figure:
    """One gate of every layer over the probe text: sigmoid gates in [0, 1], candidates in [-1, 1]."""
    layers = [g[gate] for g in probe.gates]
    zrange = GATE_RANGES.get(gate, (0.0, 1.0))
    if zrange is None:  # an RNN's pre-activations are unbounded: a symmetric scale around 0
        limit = max(1.0, float(max(np.abs(a).max() for a in layers)))
        zrange = (-limit, limit)
    return layer_heatmaps(layers, probe.tokens, gate, *zrange, max_units, how, start=start,
                          colorscale=HEATMAP_SCALE if zrange[0] < 0 else "Viridis")


def layer_heatmaps(layers, tokens, label: str, zmin: float, zmax: float, max_units: int = 32,
                   how: str = "most active", colorscale: str = HEATMAP_SCALE, start: int = 0) -> go.Figure:
    """One heatmap per layer, layer 1 at the bottom and layer L on top: x the probe's tokens from
    `start` to `window_end`, y units (a readable subset, named in each title), colour
    the value on one shared scale. The units shown are chosen over the whole probe text.

    Built as one figure from plain data: plotly's make_subplots and per-trace updates cost several
    times as much Python, and the page rebuilds this at every new probe.
    The tokens are written in a strip of their own under the bottom panel, not as its tick labels:
    Plotly measures every tick label at every redraw, which made each redraw in the browser about
    twice as slow (97 against 44 ms for 2 layers of 32 units over 64 characters, a scratch benchmark).
    """
    n = len(layers)
    units = [choose_units(states, max_units, how) for states in layers]
    labelled = any(len(shown) <= LABELLED_UNITS for shown in units)
    end = window_end(tokens, start)
    layers, labels = [states[start:end] for states in layers], [_token_label(t) for t in tokens[start:end]]
    positions = list(range(start, end))
    hover = np.array(labels, dtype=object)
    height = min(150 + 130 * n, 1400)
    strip = TOKEN_STRIP_PX / height
    domains = _stacked_domains(n, spacing=min(0.08, 0.3 / n), bottom=strip + 0.01)
    traces, layout, titles = [], {}, []
    for row, (layer, (bottom_edge, top_edge)) in enumerate(zip(reversed(range(n)), domains), start=1):
        traces.append(dict(type="heatmap",
            z=layers[layer][:, units[layer]].T, x=positions, y=[f"u{u}" for u in units[layer]], zmin=zmin, zmax=zmax,
            colorscale=colorscale, showscale=row == 1, customdata=np.tile(hover, (len(units[layer]), 1)),
            hovertemplate=f"layer {layer + 1} · '%{{customdata}}' · unit %{{y}}<br>{label} %{{z:.3f}}<extra></extra>",
            colorbar=dict(title=label, len=min(1.0, 2.5 / n), y=1, yanchor="top"), xaxis=f"x{row}", yaxis=f"y{row}"))
        x_axis = dict(anchor=f"y{row}", domain=[0, 1], showticklabels=False)
        if row == n:  # the bottom panel's x axis leads; the other panels and the token strip follow it
            x_axis["range"] = [start - 0.5, end - 0.5]
        else:
            x_axis["matches"] = f"x{n}"
        layout[f"xaxis{row}"] = x_axis
        layout[f"yaxis{row}"] = dict(anchor=f"x{row}", domain=[bottom_edge, top_edge],
                                     showticklabels=len(units[layer]) <= LABELLED_UNITS)
        titles.append(dict(text=_layer_title(layer, layers[layer].shape[1], max_units, how), x=0.5, y=top_edge,
                           xref="paper", yref="paper", xanchor="center", yanchor="bottom", showarrow=False,
                           font=dict(size=16)))
    strip_row = n + 1
    traces.append(dict(type="scatter", mode="text", x=positions, y=[0.5] * len(labels), text=labels,
                       xaxis=f"x{strip_row}", yaxis=f"y{strip_row}", hoverinfo="skip", showlegend=False))
    layout[f"xaxis{strip_row}"] = dict(anchor=f"y{strip_row}", domain=[0, 1], matches=f"x{n}", visible=False)
    layout[f"yaxis{strip_row}"] = dict(anchor=f"x{strip_row}", domain=[0, strip], range=[0, 1], visible=False,
                                       fixedrange=True)
    return go.Figure(data=traces, layout=dict(layout, annotations=titles, height=height,
                                              margin=dict(l=50 if labelled else 20, r=110, t=40, b=15),
                                              uirevision=f"heatmaps-{label}"))


TOKEN_STRIP_PX = 24
LABELLED_UNITS = 16  # up to this many units a panel names each one on its axis
# The characters of token labels a heatmap's strip shows at once: 110 single characters still stand apart
# in a chart the page's width. A longer probe is shown a window at a time (the page's "From token"
# slider): 500 characters drawn at once ran together into one grey smear.
STRIP_CHARS = 110


def window_end(tokens, start: int = 0) -> int:
    """Where a heatmap's window on the probe's tokens from `start` ends: as many tokens as STRIP_CHARS
    characters of labels hold, a word with a space after it, and one at least."""
    width = 0
    for end in range(start, len(tokens)):
        width += len(tokens[end]) + (len(tokens[end]) > 1)
        if width > STRIP_CHARS:
            return max(end, start + 1)
    return len(tokens)


def _stacked_domains(rows: int, spacing: float, bottom: float = 0.0) -> list[tuple[float, float]]:
    """Vertical [bottom, top] paper ranges of `rows` equal panels above `bottom`, the first on top."""
    height = (1 - bottom - spacing * (rows - 1)) / rows
    return [(max(bottom, 1 - (r + 1) * height - r * spacing), 1 - r * (height + spacing)) for r in range(rows)]


def _layer_title(layer: int, hidden: int, max_units: int, how: str) -> str:
    shown = min(max_units, hidden)
    return f"layer {layer + 1} · " + (f"{shown} of {hidden} units, {how}" if shown < hidden else f"all {hidden} units")


def saturation_figure(probe, cell: str, gate: str) -> go.Figure:
    """Each unit of a gate placed by how often it is left- vs right-saturated, one colour per layer."""
    fig = go.Figure()
    for layer, (gates, hidden) in enumerate(zip(probe.gates, probe.hidden)):
        left, right = layer_saturation(cell, gates, hidden)[gate]
        fig.add_scatter(x=left, y=right, mode="markers", name=f"layer {layer + 1}",
                        marker=dict(color=PALETTE[layer % len(PALETTE)], size=6, opacity=0.7),
                        customdata=np.arange(len(left)),
                        hovertemplate=f"layer {layer + 1} unit %{{customdata}}<br>left %{{x:.2f}} · right %{{y:.2f}}<extra></extra>")
    fig.add_shape(type="line", x0=0, y0=1, x1=1, y1=0, line=dict(color="#bbb", dash="dot"))
    fig.update_layout(xaxis=dict(title="fraction left-saturated (< 0.1)", range=[-0.02, 1.02]),
                      yaxis=dict(title="fraction right-saturated (> 0.9)", range=[-0.02, 1.02]),
                      height=380, margin=dict(l=75, r=120, t=30, b=70), uirevision=f"saturation-{gate}")
    return fig


def saturation_history_figure(records, gate: str) -> go.Figure:
    """Mean saturated fraction (left + right) of a gate per layer over training."""
    fig = go.Figure()
    frame = pd.DataFrame([r for r in records if r["gate"] == gate])
    for layer, rows in (frame.groupby("layer") if not frame.empty else []):
        fig.add_scatter(x=rows["step"], y=rows["left"] + rows["right"], mode="lines", name=f"layer {layer}",
                        line=dict(color=PALETTE[(layer - 1) % len(PALETTE)]))
    fig.update_layout(xaxis_title="step", yaxis=dict(title=f"{gate}: saturated fraction", range=[0, 1]),
                      height=300, margin=dict(l=75, r=120, t=30, b=70), uirevision="saturation-history")
    return fig


def gradient_figure(metrics) -> go.Figure:
    """Gradient norm per layer (input-to-hidden solid, hidden-to-hidden dashed) and the global norm.

    One legend entry per layer (both its lines), over the plot: two entries per layer at its side
    scrolled out of sight from the fourth layer on, and narrowed the plot against the chart below."""
    rows = [r for r in _thin(metrics) if "grad_ih" in r]
    fig = go.Figure()
    if rows:
        steps = [r["step"] for r in rows]
        fig.add_scatter(x=steps, y=[r["grad_norm"] for r in rows], name="global (before clipping)",
                        line=dict(color="#000", width=2))
        for layer in range(len(rows[-1]["grad_ih"])):
            color, group = PALETTE[layer % len(PALETTE)], f"layer {layer + 1}"
            fig.add_scatter(x=steps, y=[r["grad_ih"][layer] for r in rows], name=group, legendgroup=group,
                            hovertemplate=f"{group} input: %{{y:.3g}}<extra></extra>", line=dict(color=color))
            fig.add_scatter(x=steps, y=[r["grad_hh"][layer] for r in rows], name=f"{group} recurrent",
                            legendgroup=group, showlegend=False, line=dict(color=color, dash="dash"),
                            hovertemplate=f"{group} recurrent: %{{y:.3g}}<extra></extra>")
    fig.update_layout(xaxis_title="step", yaxis=_value_axis("gradient norm", log_y=True), height=340,
                      margin=dict(l=85, r=40, t=50, b=70), uirevision="gradients",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig


def clipped_figure(metrics) -> go.Figure:
    rows = _thin(metrics)
    fig = go.Figure()
    fig.add_scatter(x=[r["step"] for r in rows], y=[r.get("clipped", 0.0) for r in rows], mode="lines",
                    fill="tozeroy", name="clipped", line=dict(color=PALETTE[1]))
    fig.update_layout(xaxis_title="step", yaxis=dict(title="fraction of steps clipped", range=[0, 1.02]),
                      height=220, margin=dict(l=75, r=40, t=20, b=70), uirevision="clipped")
    return fig


def unit_text_html(tokens, values, separator: str = "") -> str:
    """The probe text, each token's background coloured by one unit's activation (blue < 0 < red).
    Spaces stay spaces (kept visible by pre-wrap), so lines wrap between words, not inside them."""
    spans = []
    for token, value in zip(tokens, values):
        v = max(-1.0, min(1.0, float(value)))
        color = f"rgba(214,39,40,{v:.2f})" if v >= 0 else f"rgba(31,119,180,{-v:.2f})"
        text = html.escape(token).replace("\n", "↵<br>")
        spans.append(f'<span title="{float(value):.3f}" style="background:{color};padding:1px 0">{text}</span>')
    return ('<div style="font-family:monospace;font-size:15px;line-height:1.9;white-space:pre-wrap;'
            'overflow-wrap:anywhere">' + html.escape(separator).join(spans) + "</div>")


def _token_label(token: str) -> str:
    return "␣" if token == " " else "⏎" if token == "\n" else token


def comparison_table(snapshots) -> pd.DataFrame:
    """A row per run: what it is and how it did."""
    rows = []
    for snap in snapshots:
        cfg = snap.config
        rows.append({"run": snap.run_id, "name": snap.name, "cell": cfg.cell.upper(), "layers": cfg.layers,
                     "hidden": cfg.hidden, "params": snap.parameters, "lr": cfg.lr,
                     "best held-out ppl": snap.best_val_ppl,
                     "last train ppl": snap.metrics[-1]["ppl"] if snap.metrics else None,
                     "tokens/s": round(snap.tokens_per_s), "status": snap.status})
    return pd.DataFrame(rows)
