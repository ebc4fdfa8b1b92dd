#!/usr/bin/env python3
"""What a fragment's rerun costs the browser: Chromium's CPU on a page of the dashboard's size (a sidebar of
24 controls, 6 more in the main area) whose one fragment reruns every second, drawing nothing, or 8 elements of
one kind that never change, or 8 controls. It is why the dashboard's timed redraws are one fragment that
draws no control (`live()` in dashboard.py).

    python bench/rerun_cost.py --seconds 30

Needs Debian's chromium and playwright.
"""
import argparse
import shutil
import tempfile
import time
from pathlib import Path

from pageserver import CHROMIUM, CHROMIUM_ARGS, ROOT, chromium_pids, cores_used, dashboard_server

PAGE = '''
import os
import streamlit as st

DRAWS = os.environ["DRAWS"]
st.set_page_config(layout="wide")
with st.sidebar:
    for i in range(8):
        st.slider(f"slider {i}", 0, 10, key=f"slider{i}")
        st.radio(f"radio {i}", ["a", "b", "c"], key=f"radio{i}", horizontal=True)
        st.selectbox(f"select {i}", ["x", "y"], key=f"select{i}")
for i in range(6):
    st.text_input(f"text {i}", key=f"text{i}")
box = st.components.v2.component("box", js="""export default function ({data, parentElement}) {
    parentElement.textContent = data;
}""")
TEXT = "the time traveller (for so it will be convenient to speak of him) was expounding a recondite matter"


@st.fragment(run_every=None if DRAWS == "no rerun" else 1.0)
def redrawn():
    for i in range(0 if DRAWS in ("no rerun", "nothing") else 8):
        if DRAWS == "captions":
            st.caption(TEXT)
        elif DRAWS == "metrics":
            st.metric(f"metric {i}", "3,141")
        elif DRAWS == "components":
            box(data=TEXT, key=f"box{i}")
        elif DRAWS == "empties":
            st.empty()
        elif DRAWS == "controls":
            st.radio(f"fragment radio {i}", ["a", "b", "c"], key=f"fragment{i}", horizontal=True)


redrawn()
'''
DRAWS = ["no rerun", "nothing", "empties", "captions", "metrics", "components", "controls"]


def chromium_cores(folder: Path, draws: str, seconds: float) -> float:
    from playwright.sync_api import sync_playwright
    with dashboard_server({"DRAWS": draws}, folder) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1500})
        page.goto(url)
        page.get_by_label("text 5").wait_for()
        time.sleep(5)  # the page drawn and settled
        with cores_used({"chromium": chromium_pids}) as used:
            time.sleep(seconds)
        browser.close()
    return used["chromium"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="length of each window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "dashboard.py").write_text(PAGE)
        shutil.copytree(ROOT / ".streamlit", folder / ".streamlit")  # the dashboard's server settings
        cores = {draws: chromium_cores(folder, draws, args.seconds) for draws in DRAWS}
    print(f"a fragment rerun every second, {args.seconds:g} s windows: Chromium's cores, and so its CPU-seconds "
          "per rerun above the page without reruns, and per element above the rerun that draws nothing")
    print("| the fragment draws | Chromium CPU | per rerun, above no rerun | per element, above nothing |")
    print("| --- | --- | --- | --- |")
    for draws, used in cores.items():
        rerun = used - cores["no rerun"] if draws != "no rerun" else None
        element = (used - cores["nothing"]) / 8 if draws not in ("no rerun", "nothing") else None
        print(f"| {draws if draws == 'no rerun' else 'nothing' if draws == 'nothing' else f'8 {draws}'} "
              f"| {used:.3f} | {'' if rerun is None else f'{rerun:.3f}'} | {'' if element is None else f'{element:.4f}'} |")


if __name__ == "__main__":
    main()
