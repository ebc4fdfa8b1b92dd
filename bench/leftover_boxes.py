#!/usr/bin/env python3
"""How often the page shows a sample box that a rerun no longer draws.

Starts the fast preset in headless Chromium, moves Layers up and down by one, and after each move looks
at "The model writes" every 100 ms for 8 s: it draws two boxes (greedy and sampled), so a third is one
left over from an earlier rerun (see `places()` in dashboard.py). Prints the looks with more than two
and the longest time one stayed.

    python bench/leftover_boxes.py [--moves 10]
"""
import argparse

from pageserver import dashboard_server, training_page

LOOKS_PER_MOVE = 80
LOOK_EVERY_MS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=10, help="Layers moves, alternately up and down")
    args = parser.parse_args()
    over = looks = streak = longest = 0
    with dashboard_server() as (url, _), training_page(url, epochs=1000) as page:
        page.wait_for_timeout(3000)
        slider = page.get_by_role("slider", name="Layers")
        for move in range(args.moves):
            slider.focus()
            slider.press("ArrowRight" if move % 2 == 0 else "ArrowLeft")
            for _ in range(LOOKS_PER_MOVE):
                looks += 1
                if page.get_by_test_id("stCode").count() > 2:
                    over, streak = over + 1, streak + 1
                    longest = max(longest, streak)
                else:
                    streak = 0
                page.wait_for_timeout(LOOK_EVERY_MS)
    print(f"| Layers moves | looks | looks with more than 2 sample boxes | longest stay |\n| --- | --- | --- | --- |\n"
          f"| {args.moves} | {looks} | {over} | {longest * LOOK_EVERY_MS / 1000:.1f} s |")


if __name__ == "__main__":
    main()
