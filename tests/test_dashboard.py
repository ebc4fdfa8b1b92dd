"""The page's logic through streamlit's AppTest: widgets in, session commands and views out."""
import html
import re

import pytest
from streamlit import config

from deeprnn import charts, controls
from deeprnn.device import cpu_multiplies_bf16
from support import button, figures, rerun_until, title


def heatmap_counts(at):
    """Heatmaps per figure, keyed by what they show ("hidden" states or a gate's name)."""
    counts = {}
    for fig in figures(at):
        for trace in fig["data"]:
            if trace["type"] == "heatmap":
                label = trace["colorbar"]["title"]["text"]
                counts[label] = counts.get(label, 0) + 1
    return counts


def test_page_loads_with_the_documented_controls(app):
    assert not app.exception
    labels = {w.label for kind in ("button", "selectbox", "slider", "select_slider") for w in app.get(kind)}
    assert {"Start", "Pause", "Stop", "Cell", "Layers", "Learning rate"} <= labels
    assert "Start" in app.info[0].value
    assert [fig["data"][0]["x"] for fig in figures(app)] == [[]]  # the curves, empty (see curve_controls)


@pytest.mark.parametrize("static_serving", [True, False])
def test_the_charts_take_new_figures_in_place_where_streamlit_serves_plotly_js(app, static_serving):
    """Served plotly.js (.streamlit/config.toml), the charts are components that keep their place and zoom
    (deeprnn/webchart.py); without it, as from a server started in another folder, st.plotly_chart."""
    served = config.get_option("server.enableStaticServing")
    config.set_option("server.enableStaticServing", static_serving)
    try:
        app.run()
    finally:
        config.set_option("server.enableStaticServing", served)
    in_place = [c for c in app.get("bidi_component") if c.proto.component_name == "deeprnn_chart"]
    assert (len(in_place), len(app.get("plotly_chart"))) == ((1, 0) if static_serving else (0, 1))
    assert [fig["data"][0]["x"] for fig in figures(app)] == [[]]


def test_a_run_that_does_worse_than_guessing_is_told_so_above_its_curves(app):
    """A small model at a rate of 2: its loss stays finite (no divergence pauses it), far above the guess."""
    for key, value in {"hidden": 16, "embedding": 8, "batch": 4, "steps": 8, "lr": 2.0}.items():
        app.select_slider(key=key).set_value(value)
    button(app, "Start").click()
    rerun_until(app, lambda at: any("does worse than knowing nothing" in w.value for w in at.warning))
    assert "running" in title(app)


def test_the_probe_text_and_prefix_fields_stop_at_what_the_views_take(app):
    fields = {field.key: field.proto.max_chars for field in app.text_input if field.key in ("probe_text", "prefix")}
    assert fields == {"prefix": 200}  # before the first Start, only the samples' prefix is on the page
    button(app, "Start").click()
    rerun_until(app, lambda at: any(field.key == "probe_text" for field in at.text_input))
    fields = {field.key: field.proto.max_chars for field in app.text_input if field.key in ("probe_text", "prefix")}
    assert fields == {"prefix": 200, "probe_text": 500}


def test_a_long_probe_is_shown_a_window_at_a_time_which_a_slider_moves(app):
    def ranges(at):  # the x range of the hidden states' heatmaps and the gates'
        return [fig["layout"]["xaxis2"]["range"] for fig in figures(at) if fig["data"][0]["type"] == "heatmap"]

    button(app, "Start").click()
    rerun_until(app, lambda at: ranges(at))
    assert not any(s.key == "probe_from" for s in app.slider)  # the default probe fits
    long_text = ("the time traveller for so it will be convenient to speak of him " * 5)[:300]
    app.text_input(key="probe_text").set_value(long_text).run()
    rerun_until(app, lambda at: any(s.key == "probe_from" for s in at.slider))
    app.slider(key="probe_from").set_value(150).run()
    rerun_until(app, lambda at: ranges(at) == [[149.5, 149.5 + charts.STRIP_CHARS]] * 2)
    assert any(f"Tokens 151 to {150 + charts.STRIP_CHARS} of 300." in c.value for c in app.caption)
    app.text_input(key="probe_text").set_value("the time").run()
    rerun_until(app, lambda at: ranges(at) == [[-0.5, 7.5]] * 2)
    assert not any(s.key == "probe_from" for s in app.slider)


def test_a_prefix_typed_before_the_first_start_is_what_the_run_writes_from(app):
    app.text_input(key="prefix").input("the machine").run()
    button(app, "Start").click()
    rerun_until(app, lambda at: any(c.value.startswith("the machine ") for c in at.code))


def test_a_prefix_the_text_cannot_spell_is_explained_under_the_samples(app):
    app.radio(key="corpus_source").set_value("paste").run()
    app.text_area(key="pasted").set_value("Путешественник по времени объяснял нам сложный вопрос. " * 60).run()
    app.radio(key="preprocess").set_value("raw").run()
    button(app, "Start").click()
    rerun_until(app, lambda at: any(c.value.startswith("<unk>") for c in at.code))  # "time traveller"
    assert any("the model reads each as <unk>" in c.value for c in app.caption)
    app.text_input(key="prefix").input("Путешественник").run()
    rerun_until(app, lambda at: all(c.value.startswith("Путешественник") for c in at.code if c.value))
    assert not any("<unk>" in c.value for c in app.caption)


def test_start_then_layers_three_then_learning_rate_event(app):
    button(app, "Start").click()
    rerun_until(app, lambda at: any(fig["data"] and fig["data"][0]["type"] == "scatter"
                                    and len(fig["data"][0]["x"]) >= 2 for fig in figures(at)))
    assert "LSTM x2" in title(app) and heatmap_counts(app)["hidden"] == 2
    device = next(m for m in app.metric if m.label == "device")
    # the fast preset's model is too small for two threads; bf16 products only on a CPU that has them
    assert (device.value, device.delta) == ("cpu", "bf16, 1 thread" if cpu_multiplies_bf16() else "1 thread")

    app.slider(key="layers").set_value(3).run()
    curves = figures(app)[0]  # the rerun that started the new run already draws its first point
    assert "LSTM x3" in title(app) and curves["data"][0]["name"] == "train" and len(curves["data"][0]["x"]) >= 1
    rerun_until(app, lambda at: heatmap_counts(at).get("hidden") == 3)

    app.select_slider(key="lr").set_value(0.02).run()
    rerun_until(app, lambda at: any(a.get("text") == "lr 0.02" for fig in figures(at)
                                    for a in fig["layout"].get("annotations", [])))
    table = next(d.value for d in app.dataframe if "layers" in d.value.columns)
    assert list(table["layers"]) == [2, 3] and list(table["status"])[0] == "stopped"
    assert "export_run" not in [w.key for w in app.selectbox]  # the closed panel draws nothing
    app.session_state["manage_open"] = True
    app.run()
    assert app.selectbox(key="export_run").value == 2  # export and manage the newest run, not the first

    app.radio(key="curve_x").set_value("seconds").run()
    app.toggle(key="curve_log").set_value(False).run()
    compare = next(fig for fig in figures(app) if fig["layout"]["uirevision"].startswith("compare"))
    assert compare["layout"]["xaxis"]["title"]["text"] == "training seconds"  # the curves' axis and scale
    assert compare["layout"]["yaxis"]["type"] == "linear"


@pytest.mark.parametrize("how", ["Delete run", "Clear all"])
def test_deleting_the_active_run_stops_it_and_the_sidebar_follows(app, how):
    button(app, "Start").click()
    rerun_until(app, lambda at: "running" in title(at))
    app.session_state["manage_open"] = True
    app.run()
    button(app, how).click().run()
    assert button(app, "Stop").disabled and button(app, "Pause").disabled
    assert "Start" in app.info[0].value  # back to the page before any run
    assert "Export and manage runs" not in [e.label for e in app.get("expander")]
    button(app, "Start").click()  # and the page goes on
    rerun_until(app, lambda at: "running" in title(at))


def test_pause_and_resume_show_their_new_state_in_the_rerun_after_the_click(app):
    """The buttons sit outside the live fragment: the rerun that a click causes must already draw the
    other button, or a second click on a stale "Pause" would be taken for what it no longer says."""
    button(app, "Start").click()
    rerun_until(app, lambda at: "running" in title(at))
    button(app, "Pause").click().run()
    assert "paused" in title(app) and [b.label for b in app.button if b.label in ("Pause", "Resume")] == ["Resume"]
    button(app, "Resume").click().run()
    assert "running" in title(app) and [b.label for b in app.button if b.label in ("Pause", "Resume")] == ["Pause"]


def test_the_rerun_after_stop_shows_the_views_of_the_weights_it_stopped_at(app):
    """As a paused or finished run's: a stopped run had shown its last periodic views, seconds of
    training older than its step. The page has no timers after a stop, so the click's rerun must have them."""
    def steps(at):  # the status line's, the heatmaps' caption's and the greedy sample's
        progress = re.search(r"step ([\d,]+) ·", at.get("progress")[0].proto.text)
        probed = next((re.search(r"probed at step (\d+)", c.value) for c in at.caption if "probed at" in c.value), None)
        greedy = next((re.search(r"greedy\*\* \(step (\d+)", m.value) for m in at.markdown if "greedy" in m.value), None)
        return [int(found.group(1).replace(",", "")) for found in (progress, probed, greedy) if found]

    button(app, "Start").click()
    rerun_until(app, lambda at: len(steps(at)) == 3 and steps(at)[0] > steps(at)[1])
    button(app, "Stop").click().run()
    assert "stopped" in title(app)
    step, probed, greedy = steps(app)
    assert step == probed == greedy


def test_empty_upload_shows_an_error_and_the_page_keeps_working(app):
    app.radio(key="corpus_source").set_value("upload").run()
    app.file_uploader[0].set_value(("empty.txt", b"", "text/plain")).run()
    button(app, "Start").click().run()
    assert not app.exception
    assert any("empty" in e.value for e in app.error)
    app.file_uploader[0].set_value(("binary.txt", b"\x00\x01\x02 abc", "text/plain")).run()
    button(app, "Start").click().run()
    assert any("binary" in e.value for e in app.error)
    app.radio(key="corpus_source").set_value("paste").run()
    app.text_area(key="pasted").set_value("too short").run()
    button(app, "Start").click().run()
    rerun_until(app, lambda at: any("needs at least" in e.value for e in at.error))
    assert not app.metric  # a run that failed before its first step has no numbers to show
    assert not any(m.value == "Compare runs" for m in app.subheader)  # and nothing to compare


def test_a_run_that_failed_before_its_model_was_built_offers_no_checkpoint(app):
    """A click on an enabled "Checkpoint" of such a run raised in the server and downloaded nothing."""
    app.radio(key="corpus_source").set_value("paste").run()
    app.text_area(key="pasted").set_value("too short").run()
    button(app, "Start").click().run()
    rerun_until(app, lambda at: any("needs at least" in e.value for e in at.error))
    app.session_state["manage_open"] = True
    app.run()
    downloads = {d.proto.label: d.proto.disabled for d in app.get("download_button")}
    assert downloads == {"Metrics CSV": False, "Checkpoint": True, "Best weights": True}


def test_runs_are_written_under_a_folder_only_once_it_can_be_written(app, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    app.text_input(key="write_dir").set_value(str(a_file / "runs")).run()
    button(app, "Start").click().run()
    assert [e.value for e in app.error] == [f"cannot write in {a_file / 'runs'}: {a_file} is a file, not a folder"]
    assert "Watch a deep RNN" in title(app)  # said before any run began: none failed
    app.text_input(key="write_dir").set_value(str(tmp_path / "runs")).run()
    button(app, "Start").click().run()
    rerun_until(app, lambda at: "running" in title(at))
    assert [p.name.endswith("-lstmx2-h96") for p in (tmp_path / "runs").iterdir()] == [True]


def test_a_message_that_comes_and_goes_leaves_the_views_in_their_places(app):
    """Moved down by a message and back up the rerun after, the views were redrawn in each other's places:
    for a moment a view could show twice, in its old place and its new one."""
    def places(at):
        return [type(child).__name__ for child in at.main.children.values()]

    before = places(app)
    app.radio(key="corpus_source").set_value("upload").run()
    button(app, "Start").click().run()
    assert any("Upload a .txt" in e.value for e in app.error)
    with_message = places(app)
    app.run()
    assert not app.error and places(app) == with_message == before


def block_sizes(node, path=()) -> dict:
    """{path: how many elements it holds} for each block at and under node. A fragment's elements in a
    place drawn outside it are in a block that the browser does not draw (a transparent one): its elements
    count as the place's own."""
    if getattr(node, "children", None) is None:
        return {}
    children = shown_children(node)
    sizes = {path: len(children)}
    for index, child in enumerate(children):
        sizes.update(block_sizes(child, (*path, index)))
    return sizes


def shown_children(node) -> list:
    shown = []
    for child in node.children.values():
        transparent = getattr(child, "children", None) is not None and child.proto.WhichOneof("type") == "transparent"
        shown.extend(shown_children(child) if transparent else [child])
    return shown


def keyed_block(node, key):
    """The block of this key at or under node, or None."""
    if getattr(node, "key", None) == key:
        return node
    for child in getattr(node, "children", {}).values():
        if (found := keyed_block(child, key)) is not None:
            return found
    return None


def test_what_a_view_draws_only_sometimes_keeps_its_place(app):
    """Streamlit removes what a fragment's rerun no longer draws only if its cleanup wins a race with the
    other fragments' runs; in CI a third sample box stayed under the two headings. So no place that the live
    part of the page draws several elements into holds fewer in one state than in another: what is not drawn
    leaves an empty place."""
    def views(at):  # the status line's place and the samples'
        return [block_sizes(keyed_block(at.main, key)) for key in ("live_status", "live_samples")]

    states = [views(app)]  # both are drawn before the first Start too
    button(app, "Start").click().run()
    states.append(views(app))  # most often before the first probe and sample
    rerun_until(app, lambda at: heatmap_counts(at).get("hidden") == 2 and at.get("code") and at.multiselect)
    for view, pattern in [("Gates", None), ("Saturation", None), ("Gradient flow", None),
                          ("Interpretable units", "a vowel"), ("Interpretable units", "a regular expression"),
                          ("Interpretable units", "a vowel"), ("Gates", None)]:
        app.radio(key="inside_view").set_value(view).run()
        if pattern:
            app.selectbox(key="finder_pattern").set_value(pattern).run()
        states.append(views(app))
    button(app, "Stop").click().run()  # a run with nothing to show
    states.append(views(app))
    sizes = {}  # (place, path): the sizes seen. A place can hold an element or a block: blocks are compared
    for state in states:
        for place, blocks in enumerate(state):
            for path, size in blocks.items():
                sizes.setdefault((place, path), set()).add(size)
    assert len(sizes) > 4  # the places were found, and each holds blocks
    assert {where: seen for where, seen in sizes.items() if len(seen) > 1} == {}


def page_deltas(at, monkeypatch) -> list:
    """The deltas of one run of the page, as Streamlit sends them to the browser."""
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue
    sent, enqueue = [], ForwardMsgQueue.enqueue
    monkeypatch.setattr(ForwardMsgQueue, "enqueue", lambda queue, msg: (sent.append(msg), enqueue(queue, msg))[1])
    at.run()
    monkeypatch.undo()
    return [msg.delta for msg in sent if msg.WhichOneof("type") == "delta"]


def test_while_a_run_trains_one_timed_part_redraws_the_page_and_it_draws_no_control(app, monkeypatch):
    """Each rerun of a timed fragment costs the browser a render of every element it draws, and of the rest of
    the page besides: four fragments with the views' controls in them took 0.2 of a core of the two that the
    best preset trains on (bench/results/dashboard-overhead.md). One fragment redraws the status line, the
    charts, the samples and the comparison; the controls are drawn by the page's full runs."""
    button(app, "Start").click()
    rerun_until(app, lambda at: heatmap_counts(at).get("hidden") == 2 and at.get("code") and at.multiselect)
    deltas = page_deltas(app, monkeypatch)
    live = [d for d in deltas if d.fragment_id]
    assert len({d.fragment_id for d in live}) == 1
    drawn = {d.new_element.WhichOneof("type") for d in live if d.WhichOneof("type") == "new_element"}
    assert {"progress", "metric", "code", "bidi_component", "dataframe"} <= drawn  # status, samples, charts, runs
    widgets = [d.new_element for d in live if d.WhichOneof("type") == "new_element"
               and getattr(getattr(d.new_element, d.new_element.WhichOneof("type")), "id", "")]
    assert {(w.WhichOneof("type"), getattr(w, w.WhichOneof("type")).component_name) for w in widgets} \
        == {("bidi_component", "deeprnn_chart")}  # only the charts, which take new figures in place
    assert any(d.new_element.WhichOneof("type") == "radio" for d in deltas if not d.fragment_id)  # the controls


GATE_NAMES = {"lstm": ["input", "forget", "candidate", "output"], "gru": ["reset", "update", "candidate"],
              "rnn": ["preactivation"]}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_cell_trains_and_the_introspection_views_render(app, cell):
    app.selectbox(key="cell").set_value(cell).run()
    button(app, "Start").click()
    first_gate = GATE_NAMES[cell][0]
    rerun_until(app, lambda at: f"{cell.upper()} x2" in title(at)
                and heatmap_counts(at) == {"hidden": 2, first_gate: 2})
    assert app.radio(key="inside_view").options == ["Gates", "Saturation", "Gradient flow", "Interpretable units"]
    assert app.radio(key="gate").options == GATE_NAMES[cell]
    app.radio(key="inside_view").set_value("Saturation").run()
    names = [t.get("name", "") for fig in figures(app) for t in fig["data"]]
    assert {"layer 1", "layer 2"} <= set(names)  # the saturation scatter has a colour per layer
    app.radio(key="inside_view").set_value("Gradient flow").run()
    names = [t.get("name", "") for fig in figures(app) for t in fig["data"]]
    assert "layer 1 recurrent" in names and "global (before clipping)" in names  # gradient flow per layer
    app.radio(key="inside_view").set_value("Interpretable units").run()
    assert app.dataframe[0].value.shape[0] == 10  # the ranked units
    for _ in range(2):  # shown first, and shown again after another view
        shown = (app.number_input(key="unit_layer").value, app.number_input(key="unit_index").value)
        best = app.dataframe[0].value.iloc[0]
        assert shown == (best["layer"], best["unit"])  # the best-matching unit, before any pick
        app.radio(key="inside_view").set_value("Gates").run()
        app.radio(key="inside_view").set_value("Interpretable units").run()
    app.selectbox(key="finder_pattern").set_value("a regular expression").run()
    app.text_input(key="finder_regex").set_value("[").run()
    assert not app.exception and any("regular expression" in w.value for w in app.warning)
    app.text_input(key="finder_regex").set_value("(?:.|.)*(?=z)").run()  # would backtrack for ever
    assert not app.exception and any("took over 0.5 s" in w.value for w in app.warning)


def test_the_chosen_views_stay_when_layers_start_a_new_run(app):
    """A new run has no probe for a moment; its views' controls were not drawn then, so Streamlit forgot
    them and the page went back to Gates and hidden states."""
    button(app, "Start").click()
    rerun_until(app, lambda at: heatmap_counts(at).get("hidden") == 2)
    app.radio(key="heatmap_states").set_value("cell").run()
    app.radio(key="inside_view").set_value("Saturation").run()
    app.radio(key="saturation_gate").set_value("output").run()
    app.slider(key="layers").set_value(3).run()
    rerun_until(app, lambda at: heatmap_counts(at).get("cell") == 3)
    assert app.radio(key="inside_view").value == "Saturation" and app.radio(key="saturation_gate").value == "output"


def test_the_views_settings_outlive_a_watched_directory_that_cannot_be_read(app):
    """Its page draws no probe views, and Streamlit forgot what their controls held: the probe text went
    back to its default, and the next prefix sent that to the session."""
    button(app, "Start").click()
    rerun_until(app, lambda at: any(t.key == "probe_text" for t in at.text_input))
    app.text_input(key="probe_text").set_value("time machine time machine").run()
    app.select_slider(key="heatmap_count").set_value(16).run()
    app.text_input(key="watch_dir").set_value("/nonexistent").run()
    app.text_input(key="prefix").set_value("the").run()
    app.text_input(key="watch_dir").set_value("").run()
    assert not app.exception
    assert app.text_input(key="probe_text").value == "time machine time machine"
    assert app.select_slider(key="heatmap_count").value == 16


def test_a_views_choice_stays_when_the_user_looks_at_another_view_and_back(app):
    button(app, "Start").click()
    rerun_until(app, lambda at: any(r.key == "gate" for r in at.radio))
    app.radio(key="gate").set_value("forget").run()
    app.radio(key="inside_view").set_value("Saturation").run()
    app.radio(key="inside_view").set_value("Gates").run()
    assert app.radio(key="gate").value == "forget"


def test_pasted_text_stays_when_the_corpus_is_switched_away_and_back(app):
    app.radio(key="corpus_source").set_value("paste").run()
    app.text_area(key="pasted").set_value("a text of my own " * 20).run()
    app.radio(key="corpus_source").set_value("timemachine").run()
    app.radio(key="corpus_source").set_value("paste").run()
    assert app.text_area(key="pasted").value == "a text of my own " * 20


def unit_text(at) -> str:
    """The text of "Interpretable units", as its coloured spans read ("" while it is not drawn)."""
    body = next((h.proto.body for h in at.get("html") if "<span" in h.proto.body), "")
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def test_a_word_run_finds_units_by_word_patterns_in_its_text_with_spaces(app):
    button(app, "Start").click()
    rerun_until(app, lambda at: heatmap_counts(at).get("hidden") == 2)
    app.radio(key="inside_view").set_value("Interpretable units").run()
    app.selectbox(key="finder_pattern").set_value("a vowel").run()
    app.radio(key="tokens").set_value("word").run()  # a new run, of words
    rerun_until(app, lambda at: unit_text(at).startswith("the time traveller"))
    finder = app.selectbox(key="finder_pattern")
    assert finder.options == ["a short word (3 letters or fewer)", "a word longer than 6 letters",
                              "a word starting with a vowel", "a regular expression"]
    assert finder.value == finder.options[0] and app.dataframe[0].value.shape[0] == 10 and not app.warning


def test_the_status_lines_counts_fit_a_metric_in_full_or_in_millions():
    assert [controls.format_count(n) for n in (0, 128_028, 999_999, 3_301_764, 12_345_678)] == \
        ["0", "128,028", "999,999", "3.30 M", "12.35 M"]


def test_a_sample_that_ends_in_blanks_says_so_under_its_box():
    assert controls.unseen_ending("time traveller" + " " * 86) == "…then 86 spaces"
    assert controls.unseen_ending("time traveller \n\n ") == "…then 4 blank characters"
    assert controls.unseen_ending("time traveller the  ") is None  # a space or two is no news
    assert controls.unseen_ending("time traveller the time") is None


def test_the_book_is_the_first_preset_and_the_page_starts_on_the_fast_one(app):
    preset = app.selectbox(key="preset")
    assert preset.options[0].startswith("The book") and preset.value == "fast"
    assert app.radio(key="preprocess").value == "spaced"
    preset.set_value("d2l").run()
    assert app.radio(key="preprocess").value == "book"  # the book's recipe with its first edition's cleaning
    assert app.slider(key="layers").value == 2 and app.select_slider(key="hidden").value == 256
    assert app.select_slider(key="lr").value == 2.0 and app.select_slider(key="embedding").value == 0
