"""deeprnn's dashboard: `streamlit run dashboard.py`. Layout and widgets only; logic lives in deeprnn/."""
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import streamlit as st

from deeprnn import charts
from deeprnn import controls as ctl
from deeprnn import introspect, webchart
from deeprnn.batches import TooShortError
from deeprnn.checkpoint import CheckpointError
from deeprnn.config import ConfigError
from deeprnn.corpus import CorpusError
from deeprnn.generate import unknown_prefix_note
from deeprnn.rundir import RunDirError, read_run_dir
from deeprnn.remote import ProcessSession
from deeprnn.session import MAX_TEXT_CHARS, SessionError
from deeprnn.snapshot import IDLE
from deeprnn.tabs import Tab, TabSessions

st.set_page_config(page_title="deeprnn: watch a deep RNN learn", layout="wide")
# Each CSS transition becomes one step at the end of its delay. A rerun that lasts past half a second (a Start,
# a move of Layers) still greys the page, but at once, where Streamlit faded 60-odd elements frame by
# frame: that took Chromium about a CPU-second on 2 cores and slowed the new run's first step beside it
# (bench/results/dashboard-overhead.md, session 34).
st.html("<style>*, *::before, *::after { transition-duration: 0s !important; }</style>")
state = st.session_state
# For a widget drawn only sometimes (a view's controls, the pasted text) or in a fragment: Streamlit forgets
# the value of a widget a run does not draw. Watching an unreadable run directory reverted the probe text
# to its default, and a prefix edited meanwhile failed on the missing probe text.
KEPT = "session"


@st.cache_resource(show_spinner=False)
def tab_sessions() -> TabSessions:
    """Every tab's session, found again by the token in the page's address after a reload."""
    return TabSessions(ProcessSession)


@st.cache_resource(scope="session", on_release=lambda tab: tab_sessions().release(tab), show_spinner=False)
def this_tab() -> Tab:
    """This tab's own session and training process: held a minute, its run paused, after the tab goes away
    (a reload's page takes it back and resumes it), then ended."""
    return tab_sessions().claim(st.query_params.get("tab"))


@st.cache_resource(show_spinner=False)
def plotly_published() -> bool:
    return webchart.publish_plotly(Path(__file__).parent / "static")


def charts_in_place() -> bool:
    """Whether Streamlit serves plotly.js for the charts that take new figures in place
    (deeprnn/webchart.py); else the page draws its charts with st.plotly_chart. Static serving is on in
    .streamlit/config.toml, which a server started from another folder does not read."""
    return st.get_option("server.enableStaticServing") and plotly_published()


in_place_chart = st.components.v2.component("deeprnn_chart", js=webchart.CHART_JS, isolate_styles=False)

tab = this_tab()
session = tab.session
if st.query_params.get("tab") != tab.token:
    st.query_params["tab"] = tab.token
latest = session.snapshot().config if tab.returned else None
for key, value in ctl.initial_values(latest, session.views if tab.returned else None).items():
    state.setdefault(key, value)


# --- what the controls do ------------------------------------------------------------------------
def user_text():
    """The uploaded or pasted text, or None; problems go to the page as messages."""
    if state.corpus_source == "paste":
        return state.pasted
    upload = state.get("upload")
    if upload is None:
        return None
    try:
        text, notice = ctl.text_from_upload(upload.name, upload.getvalue())
    except CorpusError as err:
        state.flash = str(err)
        return None
    if notice:
        state.notice = notice
    return text


def current_snapshot():
    """The watched run directory's run, else this tab's active or latest run. A directory that cannot
    be read gives IDLE with the reason as its message, which the status line shows (once, not in
    every fragment that reads it)."""
    if state.watch_dir:
        try:
            return read_run_dir(state.watch_dir)
        except RunDirError as err:
            return replace(IDLE, message=str(err))
    return session.snapshot()


def start_run():
    if state.corpus_source == "upload" and state.get("upload") is None:
        state.flash = "Upload a .txt file first, or choose another corpus."
        return
    text = user_text()
    if state.corpus_source in ("upload", "paste") and text is None:
        return
    try:
        config = ctl.config_from_values(dict(state), text)
        session.start(config, ctl.run_dir_for(state.write_dir, config) if state.write_dir else None)
        # Long enough for the first step of the best preset's model beside the page (its first point
        # came 1.5 to 1.8 s after the start on 2 cores); a small model's comes within a fraction of that.
        session.wait_for_first_point(timeout=2.5)
    except (ConfigError, SessionError, CorpusError, TooShortError, CheckpointError) as err:
        state.flash = str(err)


def restart_if_running():
    """An architecture change while training starts a new run; the old one stays for comparison."""
    if session.snapshot().active:
        start_run()


def apply_preset():
    state.update(ctl.preset_values(state.preset))
    restart_if_running()


def chart(key, build, *args, container=st):
    """Draw build(*args) in a chart that takes each new figure in place (see charts_in_place), rebuilt
    only when an argument changed. Snapshots are immutable, so an unchanged object is an unchanged
    picture, and most refreshes cost no figure building."""
    memo, in_place = state.setdefault("figure_memo", {}), charts_in_place()
    if key not in memo or not _same(memo[key][0], (in_place, *args)):
        figure = build(*args)
        memo[key] = ((in_place, *args), webchart.figure_json(figure) if in_place else figure)
    if not in_place:
        container.plotly_chart(memo[key][1], width="stretch", key=key)
        return
    with nullcontext() if container is st else container:
        in_place_chart(data=memo[key][1], key=key)


def places(count, container=st):
    """`count` empty places in a row, for elements a view draws only sometimes. When a fragment's rerun
    draws fewer elements than its last, Streamlit removes the old last ones only if its cleanup wins a
    race with the other fragments' runs; losing it, they stayed on screen for seconds (in CI, a third
    sample box under the two headings). A place left empty holds its position instead."""
    return [container.empty() for _ in range(count)]


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b or (isinstance(a, (str, int, float, bool)) and a == b)


def apply_views():
    session.set_views(probe_text=state.probe_text, prefix=state.prefix, temperature=state.temperature,
                      use_best=state.use_best)


# --- sidebar: the controls -------------------------------------------------------------------------
with st.sidebar:
    st.header("deeprnn")
    st.selectbox("Preset", list(ctl.PRESET_LABELS), format_func=ctl.PRESET_LABELS.get, key="preset",
                 on_change=apply_preset)
    snapshot = session.snapshot()
    watching = bool(state.watch_dir)
    # Each button as wide as its label: three equal columns cut "Resume" short.
    buttons = st.container(horizontal=True, gap="small")
    buttons.button("Start", type="primary", on_click=start_run, disabled=watching)
    paused = snapshot.status == "paused"  # each label does one thing: a repeated click cannot undo itself
    buttons.button("Resume" if paused else "Pause", on_click=session.resume if paused else session.pause,
                   disabled=watching or not snapshot.active)
    buttons.button("Stop", on_click=session.stop, disabled=watching or not snapshot.active)
    st.toggle("Live views", value=True, key="live_views",
              help="Redraw the curves, the samples, the views inside the network and the comparison as the run "
                   "trains. Off, they stay as last drawn until the run ends or a click redraws them, and the "
                   "browser leaves its share of the CPU to the training; the status line keeps counting.")
    with st.expander("Run directories"):
        st.text_input("Watch a run directory", key="watch_dir", placeholder="runs/my-torchrun",
                      help="Show a run that a CLI or torchrun process is writing (read-only).")
        st.text_input("Write new runs under", key="write_dir", placeholder="runs",
                      help="Each run started here also keeps a run directory in this folder.")

    st.subheader("Corpus")
    st.radio("Text", list(ctl.CORPUS_LABELS), format_func=ctl.CORPUS_LABELS.get, key="corpus_source",
             on_change=restart_if_running)
    if state.corpus_source == "upload":
        st.file_uploader("Text file", type=["txt"], key="upload")
    elif state.corpus_source == "paste":
        st.text_area("Your text", key="pasted", persist_state=KEPT, height=120,
                     placeholder="Paste a few thousand characters…")
    st.radio("Tokens", list(ctl.TOKEN_LABELS), format_func=ctl.TOKEN_LABELS.get, key="tokens",
             horizontal=True, on_change=restart_if_running)
    st.radio("Cleaning", list(ctl.CLEANING_LABELS), format_func=ctl.CLEANING_LABELS.get, key="preprocess",
             on_change=restart_if_running,
             help="Letters only, lower case, as the book. Its first edition cleans line by line and joins the "
                  "lines without a space, gluing together the words at each line break.")

    st.subheader("Architecture")
    st.caption("Changing these while a run is going starts a new run (fresh weights); the old one stays "
               "in the comparison.")
    st.selectbox("Cell", list(ctl.CELL_LABELS), format_func=ctl.CELL_LABELS.get, key="cell",
                 on_change=restart_if_running)
    st.slider("Layers", *ctl.LAYER_RANGE, key="layers", on_change=restart_if_running)
    st.select_slider("Hidden units", ctl.HIDDEN_CHOICES, key="hidden", on_change=restart_if_running)
    st.slider("Dropout", ctl.DROPOUT_RANGE[0], ctl.DROPOUT_RANGE[1], step=ctl.DROPOUT_RANGE[2], key="dropout", on_change=restart_if_running)
    st.slider("Recurrent weight drop", ctl.DROPOUT_RANGE[0], ctl.DROPOUT_RANGE[1], step=ctl.DROPOUT_RANGE[2],
              key="weight_drop", on_change=restart_if_running,
              help="Drops this fraction of each layer's hidden-to-hidden weights in every training minibatch "
                   "(DropConnect, as in AWD-LSTM); the strongest regulariser for this small text.")
    st.select_slider("Input", ctl.EMBEDDING_CHOICES, key="embedding", on_change=restart_if_running,
                     format_func=lambda e: "one-hot" if e == 0 else f"embedding {e}")

    st.subheader("Optimisation")
    st.radio("Optimizer", ["adam", "sgd"], key="optimizer", horizontal=True)
    st.select_slider("Learning rate", ctl.LR_CHOICES, key="lr", format_func=ctl.format_lr,
                     on_change=lambda: session.set_lr(state.lr),
                     help="Log scale. Applies to the running run at its next step and is marked on the curve.")
    st.select_slider("Gradient clip", ctl.CLIP_CHOICES, key="clip", format_func=lambda c: "off" if c == 0 else f"{c:g}",
                     on_change=lambda: session.set_clip(state.clip))
    st.select_slider("Batch size", ctl.BATCH_CHOICES, key="batch")
    st.select_slider("Steps per minibatch", ctl.STEPS_CHOICES, key="steps")
    st.number_input("Epoch budget", *ctl.EPOCH_RANGE, key="epochs")
    found = ctl.devices_found()
    st.selectbox("Device", list(found), format_func=found.get, key="device")
    st.caption("Optimizer, batch, steps, budget and device apply at the next Start.")

# --- main area: the live views ------------------------------------------------------------------
# One place for this rerun's messages, there with or without them: a message that came and went moved
# every view below it, and the rerun after it redrew each view in the place of another.
messages = st.container()
if flash := state.pop("flash", None):
    messages.error(flash, icon="⚠️")
if notice := state.pop("notice", None):
    messages.warning(notice)

# While a run trains, one timed fragment (`live`, at the end) redraws what changes by itself: the status
# line, the charts, the samples and the comparison, each into its place below. The controls around them
# are drawn by the page's full runs. Every fragment rerun costs the browser a render of each element it
# draws, of unchanged ones too, and of the rest of the page besides: so one rerun draws every part, every
# 2 s (4 s beside a run on every core; ctl.refresh_every_s), and it draws no widget.
every_s = ctl.refresh_every_s(session.snapshot(), watching=bool(state.watch_dir), live_views=state.live_views)
snap = current_snapshot()
runs = session.runs()


def status_place(snap):
    """The run's name and status (a change redraws the whole page), and the place of the status line."""
    if state.watch_dir:
        st.info(f"Watching the run directory `{state.watch_dir}` (read-only). Clear the field to train here.")
    st.markdown(f"### {snap.name} · `{snap.status}`" if snap.config else "### Watch a deep RNN learn")
    place = st.container(key="live_status")
    if snap.status == "idle" and not state.watch_dir:
        st.info("Choose a preset and press **Start**. The curves, each layer's hidden states and the model's own "
                "writing appear here as it trains.")
    return place


def status_bar(snap, place):
    notices_place, message_place, progress_place, numbers_place = places(4, container=place)
    if snap.notices:
        notices_place.warning("\n\n".join(snap.notices))
    if snap.message:  # a message without a run (idle) is a run directory that could not be read
        (message_place.error if snap.status in ("failed", "idle") else message_place.warning)(snap.message, icon="⚠️")
    if snap.config is None or (snap.status == "failed" and not snap.step):
        return  # nothing was trained: the message says why, and rows of zeros would say nothing
    budget = snap.config.epochs
    progress_place.progress(min(snap.epoch / budget, 1.0), text=f"epoch {snap.epoch} / {budget} · "
                                                                f"step {snap.step:,} · {snap.tokens:,} tokens")
    # A row that wraps on a narrow screen: six fixed columns cut the numbers short there ("45,…").
    row = numbers_place.container(horizontal=True, gap="small")
    row.metric("tokens/s", ctl.format_count(round(snap.tokens_per_s)), help="Over the run's last 2 s of training.")
    row.metric("elapsed", _duration(snap.elapsed))
    row.metric("ETA", _duration(snap.eta) if snap.eta is not None and snap.active else "–")
    row.metric("best held-out ppl", f"{snap.best_val_ppl:.2f}" if snap.best else "–")
    device, _, detail = snap.device.partition(", ")  # "cpu, 2 threads": the name, and how it computes
    row.metric("device", device, detail or None, delta_color="off", delta_arrow="off",
               help="bf16: the layers' products computed in bf16, where the device does it in hardware. "
                    "Threads: one for most models, all cores for a large one, shared with other tabs' "
                    "runs while they train.")
    row.metric("parameters", ctl.format_count(snap.parameters), help=f"{snap.parameters:,}")


def _duration(seconds):
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def curve_controls():
    """Returns the places of the curves and of their hint. Drawn before the first Start too, empty: the
    browser then loads and sets up its plotting while the page waits, not in the seconds after Start, when
    it had held back the first curve points by 2 to 4 s."""
    st.subheader("Learning curves")
    x_col, metric_col, log_col = st.columns(3)
    x_col.radio("x axis", ["tokens", "seconds"], horizontal=True, key="curve_x", persist_state=KEPT)
    metric_col.radio("show", ["ppl", "loss"], horizontal=True, key="curve_metric", persist_state=KEPT,
                     format_func={"ppl": "perplexity", "loss": "loss"}.get)
    log_col.toggle("log scale", value=True, key="curve_log", persist_state=KEPT)
    return places(2)


def curves(snap, chart_place, hint_place):
    chart("curves", charts.curves_figure, snap, state.curve_x, state.curve_metric, state.curve_log,
          container=chart_place)
    if snap.active and not snap.metrics:
        hint_place.caption("The first point appears after the first minibatch.")
    else:
        hint_place.empty()


def sample_controls(snap):
    """Returns the samples' place."""
    st.subheader("The model writes")
    # A row that wraps: in two fixed columns on a laptop's screen "Temperature" broke over two lines.
    row = st.container(horizontal=True)
    row.text_input("Prefix", key="prefix", persist_state=KEPT, on_change=apply_views, max_chars=MAX_TEXT_CHARS["prefix"])
    row.slider("Temperature", 0.1, 2.0, step=0.1, key="temperature", persist_state=KEPT, on_change=apply_views)
    st.toggle("Best weights ★", key="use_best", persist_state=KEPT, on_change=apply_views, disabled=snap.best is None,
              help="Write with the weights kept at the lowest held-out perplexity so far, marked ★ on the curve.")
    return st.container(key="live_samples")


def samples(snap, place):
    prefix_note, greedy_place, sampled_place = places(3, container=place)
    if not snap.samples:
        return
    if note := unknown_prefix_note(snap.samples.greedy):
        prefix_note.caption(note)
    source = f"best weights, step {snap.best['step']}" if snap.samples.from_best else f"step {snap.samples.step}"
    # One above the other, each as wide as the column: side by side, a line held 13 characters on a
    # laptop's screen and words broke across lines.
    for sample_place, heading, text in ((greedy_place, f"**greedy** ({source})", snap.samples.greedy),
                                        (sampled_place, f"**sampled** at temperature {snap.samples.temperature:g}",
                                         snap.samples.sampled)):
        with sample_place.container():
            st.markdown(heading)
            st.code(text, language=None, wrap_lines=True)
            note, = places(1)
            if ending := ctl.unseen_ending(text):
                note.caption(ending)


def heatmap_controls(snap):
    """Returns the first probe token the heatmaps show (the gates' too), and the places of their caption
    and chart."""
    st.subheader("Hidden states, layer by layer")
    text_col, what_col, units_col, count_col = st.columns([4, 2, 2, 2])
    text_col.text_input("Probe text", key="probe_text", persist_state=KEPT, on_change=apply_views,
                        max_chars=MAX_TEXT_CHARS["probe_text"])
    what_col.radio("states", ["hidden", "cell"] if snap.config.cell == "lstm" else ["hidden"],
                   horizontal=True, key="heatmap_states", persist_state=KEPT)
    units_col.selectbox("units shown", ["most active", "first"], key="heatmap_units", persist_state=KEPT)
    count_col.select_slider("how many", [8, 16, 32, 64], key="heatmap_count", persist_state=KEPT)
    caption_place, window_place, chart_place = places(3)
    start = probe_window(snap.probe.tokens, window_place) if snap.probe else 0
    return start, caption_place, chart_place


def probe_window(tokens, place) -> int:
    """The first probe token the heatmaps show: a slider once the probe is longer than they show at once
    (its characters ran together into one grey smear)."""
    if charts.window_end(tokens) == len(tokens):
        return 0
    if state.get("probe_from", 0) >= len(tokens):  # a shorter probe than the last
        state.probe_from = 0
    return place.slider("From token", 0, len(tokens) - 1, key="probe_from", persist_state=KEPT,
                        help="The heatmaps show the probe text a window at a time.")


def heatmaps(snap, start, caption_place, chart_place):
    if not snap.probe:
        caption_place.empty()
        chart_place.empty()
        return
    tokens = snap.probe.tokens
    end = charts.window_end(tokens, start)
    caption_place.caption(f"Layer 1 at the bottom, layer {len(snap.probe.hidden)} on top; "
                          f"colour is the activation, probed at step {snap.probe.step}."
                          + (f" Tokens {start + 1} to {end} of {len(tokens)}." if end - start < len(tokens) else ""))
    chart("heatmaps", charts.heatmaps_figure, snap.probe, state.heatmap_states, state.heatmap_count,
          state.heatmap_units, start, container=chart_place)


INSIDE_VIEWS = ["Gates", "Saturation", "Gradient flow", "Interpretable units"]


def inside_controls(snap):
    """The controls of the chosen view inside the network; returns the places of its charts, None for the
    interpretable units (drawn here, see units_view). Drawn before the run's first probe too, so that a new
    run (from Layers) keeps the chosen view on screen."""
    st.subheader("Inside the network")
    view = st.radio("View", INSIDE_VIEWS, horizontal=True, key="inside_view", persist_state=KEPT,
                    label_visibility="collapsed")
    cell = snap.config.cell
    first, second, third = places(3)  # as many as the fullest view draws: a view switch leaves nothing behind
    if view != "Interpretable units" or not snap.probe:  # no unit boxes: shown again, it starts at the best unit
        state.pop("finder_shown_pattern", None)
    if view == "Gates":
        first.radio("Gate", introspect.GATES[cell], horizontal=True, key="gate", persist_state=KEPT)
        return {"gates": second}
    if view == "Saturation":
        first.radio("Saturation of", introspect.saturation_gates(cell), horizontal=True, key="saturation_gate",
                    persist_state=KEPT)
        third.caption("Each dot is a unit: how often over the probe text it sits below 0.1 or above 0.9 "
                      "(Karpathy, Johnson and Fei-Fei, 2015). A plain RNN's tanh units are shown mapped to [0, 1].")
        return dict(zip(["saturation", "saturation_history"], second.container().columns(2)))
    if view == "Gradient flow":
        second.caption("Solid: each layer's input weights; dashed: its recurrent weights. A click on a layer in the "
                       "legend hides both.")
        return {"gradients": first, "clipped": third}
    st.fragment(units_view, run_every=every_s["views"])(snap.config.tokens, first, second, third)
    return None


def inside_charts(snap, start, chart_places):
    probe, cell = snap.probe, snap.config.cell
    for name, place in chart_places.items():
        if name == "gates" and probe:
            chart("gates_chart", charts.gates_figure, probe, state.gate, state.heatmap_count, state.heatmap_units,
                  start, container=place)
        elif name == "saturation" and probe:
            chart("saturation_chart", charts.saturation_figure, probe, cell, state.saturation_gate, container=place)
        elif name == "saturation_history":
            chart("saturation_history", charts.saturation_history_figure, snap.saturation, state.saturation_gate,
                  container=place)
        elif name == "gradients":
            chart("gradient_chart", charts.gradient_figure, snap.metrics, container=place)
        elif name == "clipped":
            chart("clipped_chart", charts.clipped_figure, snap.metrics, container=place)
        else:
            place.empty()


def units_view(tokens, question_place, problem_place, answer_place):
    """The interpretable units, a fragment of its own: they are widgets (a table to pick from, the unit's
    boxes), which the live part does not draw, and they follow the probe as the run trains."""
    interpretable_units(current_snapshot().probe, tokens, question_place, problem_place, answer_place)


def interpretable_units(probe, tokens, question_place, problem_place, answer_place):
    pattern_col, regex_col = question_place.container().columns(2)
    pattern = pattern_col.selectbox("Find units that track", [*introspect.finder_patterns(tokens), "a regular expression"],
                                    key="finder_pattern", persist_state=KEPT)
    regex_place, = places(1, container=regex_col)
    if pattern == "a regular expression":
        pattern = regex_place.text_input("Regular expression over the probe text", value="[aeiou]", key="finder_regex",
                                         persist_state=KEPT)
    if not probe:
        return
    try:
        marked = introspect.pattern_mask(probe.tokens, pattern, probe.separator)
        ranked = introspect.rank_units(list(probe.hidden), marked)
    except introspect.PatternError as err:
        problem_place.warning(str(err))
        ranked = []
    if ranked and pattern != state.get("finder_shown_pattern"):  # a new question starts at its best answer
        state.unit_layer, state.unit_index = ranked[0]["layer"], ranked[0]["unit"]
    state.finder_shown_pattern = pattern
    picked = state.get("finder_table")
    rows = picked.selection.rows if picked else []
    if ranked and rows and rows != state.get("finder_applied"):
        state.unit_layer, state.unit_index = ranked[rows[0]]["layer"], ranked[rows[0]]["unit"]
    state.finder_applied = rows
    state.unit_layer = min(state.unit_layer, len(probe.hidden))  # the run may have fewer layers or units
    state.unit_index = min(state.unit_index, probe.hidden[0].shape[1] - 1)
    table_col, viewer_col = answer_place.container().columns([2, 3])
    table_col.dataframe(ranked, hide_index=True, on_select="rerun", selection_mode="single-row",
                        key="finder_table", width="stretch")
    table_col.caption("Pick a row to show that unit.")
    with viewer_col:
        layer_col, unit_col = st.columns(2)
        layer = layer_col.number_input("Layer", 1, len(probe.hidden), key="unit_layer", persist_state=KEPT)
        unit = unit_col.number_input("Unit", 0, probe.hidden[0].shape[1] - 1, key="unit_index", persist_state=KEPT)
        st.html(charts.unit_text_html(probe.tokens, probe.hidden[layer - 1][:, unit], probe.separator))
        st.caption(f"The probe text coloured by layer {layer}, unit {unit}: red positive, blue negative.")


def comparison_controls(runs):
    """Every run of this tab with a point to compare (not one that failed at once): the runs chosen, and
    the places of their chart and table."""
    runs = [r for r in runs if r.metrics]
    if not runs:
        return None
    st.subheader("Compare runs")
    labels = {r.run_id: f"#{r.run_id} {r.name}" for r in runs}
    new_runs = [run_id for run_id in labels if run_id not in state.setdefault("compare_seen", set())]
    state.compare_seen.update(new_runs)
    state.compare = [run_id for run_id in state.get("compare", []) if run_id in labels] + new_runs
    chosen = st.multiselect("Runs", list(labels), format_func=labels.get, key="compare")
    return chosen, *places(2)


def comparison(runs, chosen, chart_place, table_place):
    shown = [r for r in runs if r.run_id in chosen]
    if not shown:
        chart_place.empty()
        table_place.empty()
        return
    chart("compare_chart", charts.comparison_figure, shown, state.curve_x, state.curve_log,  # as the curves
          container=chart_place)
    table_place.dataframe(charts.comparison_table(shown), hide_index=True, width="stretch", column_config=RUN_COLUMNS)


RUN_COLUMNS = {"params": st.column_config.NumberColumn(format="localized"),
               "lr": st.column_config.NumberColumn(format="%g"),
               "best held-out ppl": st.column_config.NumberColumn(format="%.2f"),
               "last train ppl": st.column_config.NumberColumn(format="%.2f"),
               "tokens/s": st.column_config.NumberColumn(format="localized")}


def manage(runs):
    # Drawn only while open: closed, its redraws would cost the browser for nothing.
    with st.expander("Export and manage runs", key="manage_open", on_change="rerun") as panel:
        if not panel.open:
            state.pop("manage_seen", None)  # opened again, it starts on the newest run
            return
        labels = {r.run_id: f"#{r.run_id} {r.name} ({r.status})" for r in runs}
        if state.get("manage_seen") != list(labels):  # a run started or was deleted: the newest is the one wanted
            state.export_run, state.manage_seen = runs[-1].run_id, list(labels)
        run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="export_run")
        chosen = session.run_snapshot(run_id)
        csv_col, ckpt_col, best_col, delete_col, clear_col = st.columns(5)
        csv_col.download_button("Metrics CSV", data=lambda: session.export_csv(run_id),
                                file_name=f"deeprnn-run{run_id}.csv", mime="text/csv")
        ckpt_col.download_button("Checkpoint", data=lambda: session.export_checkpoint(run_id),
                                 file_name=f"deeprnn-run{run_id}.pt", disabled=not chosen.has_weights)
        best_col.download_button("Best weights", data=lambda: session.export_checkpoint(run_id, best=True),
                                 file_name=f"deeprnn-run{run_id}-best.pt",
                                 disabled=chosen.best is None)
        # The whole page after these: either may stop the active run, which the sidebar's buttons show.
        if delete_col.button("Delete run"):
            session.delete_run(run_id)
            st.rerun()
        if clear_col.button("Clear all"):
            session.clear_runs()
            st.rerun()
        st.caption("Checkpoints work with `python -m deeprnn generate --checkpoint FILE` and "
                   "`python -m deeprnn train --resume FILE`.")


# --- the page, top to bottom ------------------------------------------------------------------------
status = status_place(snap)
curves_col, samples_col = st.columns([3, 2], gap="large")
with curves_col:
    curve_places = curve_controls()
with samples_col:
    sample_place = sample_controls(snap)
probe_places = None
if snap.status != "idle":
    start, *heatmap_places = heatmap_controls(snap)
    probe_places = start, heatmap_places, inside_controls(snap)
compared = comparison_controls(runs)
if runs:
    manage(runs)


@st.fragment(run_every=every_s["status"])
def live(structure, with_views):
    """What changes as a run trains, into the places drawn above: the status line, and with live views the
    views too, in the same rerun. When the run pauses or ends, or the controls would be drawn differently
    (ctl.page_structure), the whole page is drawn again, and the timer follows."""
    snap, runs = current_snapshot(), session.runs()
    if ctl.page_structure(snap, runs) != structure:
        st.rerun()
    status_bar(snap, status)
    if with_views:
        views(snap, runs)


def views(snap, runs):
    curves(snap, *curve_places)
    samples(snap, sample_place)
    if probe_places:
        start, heatmap_places, chart_places = probe_places
        heatmaps(snap, start, *heatmap_places)
        if chart_places:
            inside_charts(snap, start, chart_places)
    if compared:
        comparison(runs, *compared)


live_views = every_s["views"] is not None
live(ctl.page_structure(snap, runs), with_views=live_views)
if not live_views:  # drawn with the page only: no live views, or nothing that changes by itself
    views(snap, runs)
