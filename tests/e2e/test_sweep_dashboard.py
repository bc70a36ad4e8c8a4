"""The sweeps page in a real headless Chromium against ``nnserve api`` and a worker: a grid sweep followed
live to its end, its trials table sorted by a click, its best-so-far curve and its scatter drawn."""

from __future__ import annotations

import pytest

from nnserve import Client
from tests.e2e.test_dashboard import ARTIFACTS, BROWSER_ARGS, CHROMIUM, colour_pixels, sync_playwright
from tests.stack import stack

BEST_COLOUR, POINT_COLOUR = (37, 99, 235), (234, 88, 12)  # the strokes set in sweeps.js


@pytest.fixture(scope="module")
def url(redis_server, tmp_path_factory):
    with stack(redis_server.url, tmp_path_factory.mktemp("sweep-dashboard")) as base:
        yield base


def test_a_sweep_live_on_its_page(url):
    spec = {
        "dataset": "iris",
        "name": "iris-grid",
        "model": {
            "layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
        "training": {
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "epochs": 300,  # long enough (a few seconds) for the page to see the sweep running
            "validation_split": 0.2,
            "seed": 0,
        },
        "search_space": {"training.optimizer.learning_rate": {"choice": [0.001, 0.01, 0.05, 0.1]}},
        "strategy": "grid",
        "parallelism": 1,
    }
    with Client(url) as nn:
        sweep = nn.sweep(spec)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=url).new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(f"/sweeps?id={sweep['id']}")
        page.wait_for_selector("#sweep-status:text('running')", timeout=60_000)  # live, while it runs
        page.wait_for_selector("#sweep-status:text('succeeded')", timeout=180_000)
        page.wait_for_selector("#sweep-rows tr")  # the list, refreshed at the end
        assert page.locator("#trial-rows tr").count() == 4
        assert "best" in page.locator("#sweep-best").inner_text()
        # Sort by the objective, then the other way.
        page.click("#trial-head th[data-key=objective]")
        values = [float(v) for v in page.locator("#trial-rows tr td:nth-child(3)").all_inner_texts()]
        assert values == sorted(values)
        page.click("#trial-head th[data-key=objective]")
        values = [float(v) for v in page.locator("#trial-rows tr td:nth-child(3)").all_inner_texts()]
        assert values == sorted(values, reverse=True)
        assert colour_pixels(page, "#best-chart canvas", BEST_COLOUR) > 50
        assert colour_pixels(page, "#scatter-chart canvas", POINT_COLOUR) > 20
        assert not problems, problems
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "sweeps.png"), full_page=True)
        browser.close()
