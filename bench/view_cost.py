#!/usr/bin/env python3
"""The cost of each live view, in milliseconds of server time, beside the cost of a training step, and
of each figure's draw in the browser.

Builds each view the page draws (probe, samples, every figure, serialised to the JSON the page's charts
are sent) for a small and a large model, hands each figure to a chart that shows it already, as the page's
charts take each new figure (Plotly.react in headless Chromium: Debian's, through playwright), and prints
one table per model.

    python bench/view_cost.py
    python bench/view_cost.py --no-browser
"""
import argparse
import plotly.offline
import torch

import repo  # noqa: F401  puts the repository's deeprnn on sys.path
from deeprnn import charts, webchart
from deeprnn.config import preset
from deeprnn.session import VIEW_SHARE, ViewSettings, compute_views, saturation_records
from deeprnn.train import Trainer
from pageserver import CHROMIUM, CHROMIUM_ARGS, WIDENED_MARGINS
from timing import median_ms

# Each figure handed this many times to a chart in a page of its own, as wide as the page's widest chart.
DRAWS = 11
DRAW_FIGURES = """async ([figures, draws]) => {
    const widened = """ + WIDENED_MARGINS + """;
    const chart = document.getElementById('chart'), result = {};
    for (const [name, text] of Object.entries(figures)) {
        const first = JSON.parse(text), times = [];
        Plotly.purge(chart);
        await Plotly.newPlot(chart, first.data, first.layout);
        for (let i = 0; i < draws; i++) {
            const started = performance.now();
            const figure = JSON.parse(text);  // as the chart parses each update: new arrays, all redrawn
            await Plotly.react(chart, figure.data, figure.layout);
            times.push(performance.now() - started);
        }
        times.sort((a, b) => a - b);
        result[name] = [times[Math.floor(draws / 2)], widened(chart)];
    }
    return result;
}"""


def snapshot_for(trainer: Trainer, probe, samples):
    """A Snapshot-like object with the trained history, as the page receives it."""
    from deeprnn.session import Snapshot
    return Snapshot(1, "bench", trainer.config, "running", metrics=trainer.metrics.records(),
                    evals=trainer.evals.records(), events=tuple(trainer.events), probe=probe, samples=samples,
                    saturation=tuple(saturation_records(probe, trainer.config.cell)))


def measure(config, browser: bool) -> list[tuple[str, float]]:
    trainer = Trainer(config)
    steps = trainer.steps()
    for _ in range(30):
        next(steps)
    step_ms, _ = median_ms(lambda: next(steps), repeat=10)
    views = ViewSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the session's view thread computes them
    views_ms, (probe, samples) = median_ms(lambda: compute_views(trainer, views))
    torch.set_num_threads(threads)
    trainer.report()
    snap = snapshot_for(trainer, probe, samples)
    figures = {
        "curves": lambda: charts.curves_figure(snap),
        "hidden-state heatmaps": lambda: charts.heatmaps_figure(probe),
        "gate heatmaps": lambda: charts.gates_figure(probe, next(iter(probe.gates[0]))),
        "saturation scatter": lambda: charts.saturation_figure(probe, config.cell, "forget"),
        "saturation history": lambda: charts.saturation_history_figure(snap.saturation, "forget"),
        "gradient flow": lambda: charts.gradient_figure(snap.metrics),
        "clipped fraction": lambda: charts.clipped_figure(snap.metrics),
        "comparison": lambda: charts.comparison_figure([snap]),
    }
    rows = [("one training step (worker thread)", step_ms),
            (f"probe + greedy and sampled text (view thread, one torch thread; paced to <= {VIEW_SHARE:.0%} of the run)",
             views_ms)]
    total, sent = 0.0, {}
    for name, build in figures.items():
        ms, sent[name] = median_ms(lambda: webchart.figure_json(build()))
        rows.append((f"{name}: build + JSON (page)", ms))
        total += ms
    rows.append(("all figures of one page refresh", total))
    if browser:
        drawn = browser_draw_ms(sent)
        rows += [(f"{name}: one update in Chromium" + (f" (margins widened, {', '.join(widened)}: laid out twice)"
                                                     if widened else ""), ms) for name, (ms, widened) in drawn.items()]
    return rows


def browser_draw_ms(figures_json: dict[str, str]) -> dict[str, list]:
    """Per figure (as the JSON the page is sent): the median milliseconds of parsing it and handing it to
    Plotly.react in headless Chromium, and each margin that Plotly widened for the figure's labels, legend
    or colour bar, which lays it out a second time."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1500})
        page.set_content('<div id="chart" style="width: 1100px"></div>')
        page.add_script_tag(content=plotly.offline.get_plotlyjs())  # the plotly.js the page serves
        drawn = page.evaluate(DRAW_FIGURES, [figures_json, DRAWS])
        browser.close()
    return drawn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-browser", action="store_true", help="skip the figures' draws in Chromium")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for layers, hidden in ((2, 128), (8, 512)):
        config = preset("fast", layers=layers, hidden=hidden, max_tokens=60_000)
        print(f"\nLSTM {layers} x {hidden}, batch {config.batch}, steps {config.steps}, {args.threads} threads")
        print("| view | ms (median) |\n| --- | --- |")
        for name, ms in measure(config, browser=not args.no_browser):
            print(f"| {name} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
