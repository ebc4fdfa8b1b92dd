"""Plot builders: data in, plotly figure out. No streamlit, no state, so each one is testable."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#393b79", "#637939")
X_AXES = {"tokens": "tokens seen", "seconds": "training seconds"}
METRICS = {"ppl": ("perplexity", "ppl", "val_ppl"), "loss": ("loss (nats per token)", "loss", "val_loss")}
MAX_CURVE_POINTS = 1500
HEATMAP_SCALE = "RdBu_r"


def _thin(rows: tuple, limit: int = MAX_CURVE_POINTS) -> tuple:
    """At most `limit` evenly spaced rows, always keeping the newest (what is drawn, not trained)."""
    if len(rows) <= limit:
        return rows
    index = np.linspace(0, len(rows) - 1, limit).round().astype(int)
    return tuple(rows[i] for i in index)


def curves_figure(snapshot, x: str = "tokens", metric: str = "ppl", log_y: bool = True) -> go.Figure:
    """Train and held-out curves of one run, learning-rate changes and the kept best point marked."""
    title, train_key, val_key = METRICS[metric]
    fig = go.Figure()
    train = _thin(snapshot.metrics)
    fig.add_scatter(x=[r[x] for r in train], y=[r[train_key] for r in train], mode="lines",
                    name="train", line=dict(color=PALETTE[0]))
    if snapshot.evals:
        fig.add_scatter(x=[r[x] for r in snapshot.evals], y=[r[val_key] for r in snapshot.evals],
                        mode="lines+markers", name="held-out", line=dict(color=PALETTE[1]))
    _mark_events(fig, snapshot, x)
    _mark_best(fig, snapshot, x, val_key)
    fig.update_layout(xaxis_title=X_AXES[x], yaxis_title=title, yaxis_type="log" if log_y else "linear",
                      uirevision=f"curves-{x}-{metric}-{log_y}", height=340, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.08, x=0), hovermode="x unified")
    return fig


def _event_x(snapshot, step: int, x: str):
    """Where on the x axis a step falls, from the nearest report point at or after it."""
    for row in snapshot.metrics:
        if row["step"] >= step:
            return row[x]
    return snapshot.metrics[-1][x] if snapshot.metrics else None


def _mark_events(fig: go.Figure, snapshot, x: str) -> None:
    for event in snapshot.events:
        at = _event_x(snapshot, event["step"], x)
        if at is None:
            continue
        label = {"lr": f"lr {event['value']:g}", "clip": f"clip {event['value']:g}",
                 "diverged": "diverged"}.get(event["kind"], event["kind"])
        fig.add_vline(x=at, line=dict(color="#888", dash="dot", width=1))
        fig.add_annotation(x=at, y=1, yref="paper", text=label, showarrow=False, yanchor="bottom",
                           font=dict(size=10, color="#555"))


def _mark_best(fig: go.Figure, snapshot, x: str, val_key: str) -> None:
    best = snapshot.best
    match = [r for r in snapshot.evals if best and r["step"] == best["step"]]
    if match:
        fig.add_scatter(x=[match[0][x]], y=[match[0][val_key]], mode="markers", name="kept best",
                        marker=dict(symbol="star", size=14, color="#f2b600", line=dict(color="#000", width=1)))


def comparison_figure(snapshots, x: str = "tokens", log_y: bool = True) -> go.Figure:
    """Held-out perplexity (train where a run has no held-out split) of several runs, overlaid."""
    fig = go.Figure()
    for i, snap in enumerate(snapshots):
        rows, key, kind = (snap.evals, "val_ppl", "held-out") if snap.evals else (_thin(snap.metrics), "ppl", "train")
        fig.add_scatter(x=[r[x] for r in rows], y=[r[key] for r in rows], mode="lines",
                        name=f"#{snap.run_id} {snap.name} ({kind})", line=dict(color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(xaxis_title=X_AXES[x], yaxis_title="perplexity", yaxis_type="log" if log_y else "linear",
                      uirevision="compare", height=340, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=-0.25, x=0))
    return fig


def choose_units(layer_states: np.ndarray, count: int, how: str = "most active") -> np.ndarray:
    """Which hidden units to draw when there are too many: the first ones, or those that vary most."""
    hidden = layer_states.shape[1]
    if hidden <= count:
        return np.arange(hidden)
    if how == "first":
        return np.arange(count)
    return np.sort(np.argsort(layer_states.std(axis=0))[::-1][:count])


def heatmaps_figure(probe, states: str = "hidden", max_units: int = 32, how: str = "most active") -> go.Figure:
    """One heatmap per layer, layer 1 at the bottom and layer L on top: x the probe's characters,
    y hidden units, colour the activation on one shared scale."""
    layers = probe.hidden if states == "hidden" else probe.cell
    n = len(layers)
    limit = 1.0 if states == "hidden" else max(1.0, float(max(np.abs(s).max() for s in layers)))
    labels = [_token_label(t) for t in probe.tokens]
    positions = list(range(len(labels)))
    titles = []
    for layer in reversed(range(n)):
        shown = min(max_units, layers[layer].shape[1])
        subset = f"{shown} of {layers[layer].shape[1]} units, {how}" if shown < layers[layer].shape[1] else \
            f"all {shown} units"
        titles.append(f"layer {layer + 1} · {subset}")
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=min(0.08, 0.3 / n),
                        subplot_titles=titles)
    for row, layer in enumerate(reversed(range(n)), start=1):
        units = choose_units(layers[layer], max_units, how)
        z = layers[layer][:, units].T
        fig.add_heatmap(z=z, x=positions, y=[f"u{u}" for u in units], zmin=-limit, zmax=limit,
                        colorscale=HEATMAP_SCALE, coloraxis=None, showscale=row == 1,
                        customdata=np.tile(np.array(labels, dtype=object), (len(units), 1)),
                        hovertemplate="layer %d · char '%%{customdata}' · unit %%{y}<br>value %%{z:.3f}<extra></extra>"
                        % (layer + 1),
                        colorbar=dict(title=states, len=0.5, y=1, yanchor="top"), row=row, col=1)
        fig.update_yaxes(showticklabels=len(units) <= 16, row=row, col=1)
    fig.update_xaxes(tickmode="array", tickvals=positions, ticktext=labels, tickangle=0, row=n, col=1)
    fig.update_layout(height=min(150 + 130 * n, 1400), margin=dict(l=10, r=10, t=40, b=10),
                      uirevision="heatmaps")
    return fig


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
