"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against
``nnserve api`` and ``nnserve worker`` processes: upload a CSV, train iris from the preset while the
loss curve is drawn, see the model and its accuracy, predict a species.

The screenshot is kept at ``tests/artifacts/dashboard.png``; docs/dashboard.png is a copy of it.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest

from nnserve import Client
from tests.conftest import ROOT
from tests.stack import stack

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
IRIS_CSV = ROOT / "service" / "builtin" / "iris.csv"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRAINING = 120_000  # ms: generous, the machine is shared with other test runs
KEY = "dashboard-test-key-0123456789"
LOSS_COLOUR, VAL_LOSS_COLOUR = (37, 99, 235), (234, 88, 12)  # the series strokes set in app.js

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None

# CI must run this test: there a missing browser or driver is a failure, elsewhere a skip.
if not os.environ.get("CI") and (sync_playwright is None or not CHROMIUM.exists()):
    pytest.skip("needs Debian's chromium (apt-get install chromium) and playwright", allow_module_level=True)


@pytest.fixture(scope="module")
def url(redis_server, tmp_path_factory):
    with stack(redis_server.url, tmp_path_factory.mktemp("dashboard")) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def keyed_url(url, redis_server, tmp_path_factory):
    """A second API with API keys on the same Redis; the first stack's worker trains for both. Pages
    of the first API's origin may call it (CORS)."""
    with stack(
        redis_server.url, tmp_path_factory.mktemp("keyed"), workers=0, flush=False, api_keys=KEY, cors_origins=url
    ) as base:
        yield base


@contextlib.contextmanager
def open_page(browser, base_url: str):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=base_url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.problems = []  # uncaught exceptions and Content-Security-Policy refusals
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "console",
        lambda message: (
            page.problems.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    page.goto("/")
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, url):
    with open_page(browser, url) as page:
        page.wait_for_selector("#train-dataset option[value=iris]", state="attached")
        yield page


def colour_pixels(page, selector: str, rgb: tuple[int, int, int]) -> int:
    """Pixels of the canvas under ``selector`` within a small distance of ``rgb``: how much of a series is drawn."""
    return page.evaluate(
        """([selector, [r, g, b]]) => {
        const canvas = document.querySelector(selector);
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < pixels.length; i += 4)
            if (pixels[i + 3] > 200 && Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g) + Math.abs(pixels[i + 2] - b) < 60)
                count++;
        return count;
    }""",
        [selector, list(rgb)],
    )


def test_upload_train_watch_and_predict(page):
    # Upload iris as a CSV: the target column is offered from the file's header.
    page.set_input_files("#upload-file", str(IRIS_CSV))
    page.wait_for_selector("#upload-target option[value=species]", state="attached")
    assert page.input_value("#upload-target") == "species"
    page.fill("#upload-name", "iris upload")
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#notice.info")
    assert "Uploaded iris upload: 150 rows, 4 features" in page.inner_text("#notice")
    # The notice comes first; the dataset list is fetched again after it, then the upload chosen.
    expect(page.locator("#train-dataset")).to_have_value(re.compile(r"^ds_"))
    uploaded = page.input_value("#train-dataset")
    assert uploaded.startswith("ds_")
    assert "3 classes" in page.inner_text("#dataset-rows tr:has-text('iris upload')")

    # The iris preset (which picks the built-in iris), then the uploaded copy.
    page.select_option("#preset", "iris")
    assert page.input_value("#train-dataset") == "iris"
    assert page.locator("#layers > li").count() == 2
    assert '"units": 8' in page.input_value("#spec-json")
    page.select_option("#train-dataset", uploaded)
    page.click("#start")

    page.wait_for_selector("#job-status.succeeded", timeout=TRAINING)
    assert page.inner_text("#job-epochs") == "epoch 100 / 100"
    page.wait_for_function("document.querySelector('#chart').dataset.epochs === '100'")
    assert colour_pixels(page, "#chart canvas", LOSS_COLOUR) > 100
    assert colour_pixels(page, "#chart canvas", VAL_LOSS_COLOUR) > 50
    job_line = page.inner_text("#job-line")
    model_id = re.search(r"→ (mdl_\w+)", job_line).group(1)
    assert uploaded in job_line

    # The model is listed with its accuracy, and chosen for predictions.
    row = page.locator("#model-rows tr", has_text=model_id)
    row.wait_for()
    assert "ready" in row.inner_text()
    accuracy = float(re.search(r"accuracy ([0-9.]+)", row.inner_text()).group(1))
    assert accuracy >= 0.9
    assert page.input_value("#predict-model") == model_id

    for name, value in zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], [5.1, 3.5, 1.4, 0.2]):
        page.fill(f"#predict-inputs input[name={name}]", str(value))
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector("#predicted")
    assert page.inner_text("#predicted") == "setosa"
    probabilities = page.locator(".probabilities tr")
    assert probabilities.count() == 3 and "setosa" in probabilities.first.inner_text()

    # Its evaluation report on the held-out rows: the figures, the confusion-matrix heatmap, the reliability plot.
    expect(page.locator("#report-line")).to_contain_text("on validation (30 rows): accuracy")
    confusion = page.locator("#confusion tr")
    assert confusion.count() == 4 and "setosa" in confusion.nth(1).inner_text()
    counts = [int(cell) for row in range(1, 4) for cell in confusion.nth(row).locator("td").all_inner_texts()]
    assert sum(counts) == 30
    assert int(page.get_attribute("#reliability", "data-bins")) >= 1
    assert colour_pixels(page, "#reliability canvas", LOSS_COLOUR) > 20

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert page.problems == []


def test_cancel_keeping_the_best_epoch_leaves_a_ready_model_with_its_report(page):
    page.select_option("#preset", "iris")
    page.fill("#epochs", "5000")
    page.click("#start")
    page.wait_for_selector("#job-status.running")
    page.wait_for_function("Number(document.querySelector('#chart').dataset.epochs) >= 3")
    page.click("#cancel-keep")
    page.wait_for_selector("#job-status.canceled", timeout=TRAINING)
    model_id = re.search(r"→ (mdl_\w+)", page.inner_text("#job-line")).group(1)
    row = page.locator("#model-rows tr", has_text=model_id)
    row.wait_for()
    assert "ready" in row.inner_text()
    expect(page.locator("#predict-model")).to_have_value(model_id)
    expect(page.locator("#report-line")).to_contain_text("on validation (30 rows)")
    assert page.problems == []


def test_a_bad_spec_shows_the_fields_at_fault(page):
    page.click("#spec-details summary")
    page.fill("#spec-json", '{"model": {"layers": [{"type": "dense", "units": 0}]}}')
    page.click("#start")
    page.wait_for_selector("#notice.error")
    assert "model.layers.0.units" in page.inner_text("#notice")

    page.fill("#spec-json", '{"model": ')
    assert page.is_visible("#spec-error")
    page.click("#start")
    assert "does not parse" in page.inner_text("#notice")


def test_the_api_key_is_kept_for_the_tab_and_sent(page, url):
    with Client(url) as nn:
        nn.train("linear", {"layers": [{"type": "dense", "units": 1}]}, {"epochs": 1})
    page.fill("#api-key", "key-for-this-tab")
    with page.expect_request(lambda request: request.url.endswith("/v1/models?limit=1000")) as caught:
        page.click("#key-form button[type=submit]")
    assert caught.value.headers["authorization"] == "Bearer key-for-this-tab"
    assert page.evaluate("sessionStorage.getItem('nnserve.apiKey')") == "key-for-this-tab"
    page.reload()
    with page.expect_request(lambda request: "/v1/jobs/" in request.url) as caught:
        page.locator("#job-rows button").first.click()
    assert caught.value.headers["authorization"] == "Bearer key-for-this-tab"
    page.click("#key-clear")
    assert page.evaluate("sessionStorage.getItem('nnserve.apiKey')") is None


def test_with_api_keys_it_asks_for_one_then_trains_by_polling(browser, keyed_url):
    with open_page(browser, keyed_url) as page:
        page.wait_for_selector("#notice.error")
        assert "Paste an API key" in page.inner_text("#notice")
        streams = []
        page.on("request", lambda request: streams.append(request.url) if request.url.endswith("/events") else None)
        page.fill("#api-key", KEY)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#train-dataset option[value=blobs]", state="attached")
        page.select_option("#preset", "blobs")
        page.click("#start")
        page.wait_for_selector("#job-status.succeeded", timeout=TRAINING)
        page.wait_for_function("document.querySelector('#chart').dataset.epochs === '20'")
        assert colour_pixels(page, "#chart canvas", LOSS_COLOUR) > 100
        assert streams == []  # EventSource cannot send the key, so the page polled

        page.wait_for_selector("#predict-inputs input[name=x1]")
        page.fill("#predict-inputs input[name=x1]", "2")
        page.fill("#predict-inputs input[name=x2]", "2")
        page.click("#predict-form button[type=submit]")
        page.wait_for_selector("#predicted")
        assert page.inner_text("#predicted") == "1"
        assert page.problems == []


CROSS_ORIGIN_FETCH = """async ([api, key]) => {
    try {
        const response = await fetch(api + "/v1/datasets?limit=1", {headers: {Authorization: "Bearer " + key}});
        const body = await response.json();
        return {status: response.status, total: body.total, link: response.headers.get("Link"),
                requestId: response.headers.get("X-Request-ID")};
    } catch (error) {
        return {error: String(error)};
    }
}"""


def test_a_page_of_another_origin_calls_the_api_through_cors(browser, url, keyed_url):
    """A real cross-origin fetch, with a preflight (the Authorization header asks for one): a page of the
    first API's origin calls the second API, which allows that origin; the way back, the first API
    allows no origin (CORS is off by default), so the browser keeps its answer from the page."""
    context = browser.new_context()
    try:
        page = context.new_page()
        preflights = []
        page.on("request", lambda request: preflights.append(request.url) if request.method == "OPTIONS" else None)
        page.goto(f"{url}/healthz")  # a page of that origin, without the dashboard's connect-src policy
        allowed = page.evaluate(CROSS_ORIGIN_FETCH, [keyed_url, KEY])
        assert allowed["status"] == 200 and allowed["total"] == 4, allowed  # the built-ins: iris, blobs, linear, digits
        assert 'rel="next"' in allowed["link"] and allowed["requestId"]  # exposed response headers
        page.goto(f"{keyed_url}/healthz")
        refused = page.evaluate(CROSS_ORIGIN_FETCH, [url, KEY])
        assert "Failed to fetch" in refused.get("error", ""), refused
    finally:
        context.close()


def test_the_api_docs_are_swagger_ui_5_reading_openapi_3_1(browser, url):
    context = browser.new_context(base_url=url)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        outside = []
        page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(url) else None)
        page.goto("/docs")
        page.wait_for_selector(".swagger-ui .info .title")
        assert "nnserve" in page.inner_text(".swagger-ui .info .title")
        assert "OAS 3.1" in page.inner_text(".swagger-ui .info")
        page.wait_for_selector(".opblock-tag-section")
        assert page.locator(".opblock").count() > 20 and outside == []  # every route; nothing from a CDN
    finally:
        context.close()


def test_models_grouped_by_name_roll_back_and_predict_through_the_name(page, url):
    """Train two versions under one name, see both with their alias badges, roll back with "make current",
    predict through the name and see the rolled-back version answer."""
    spec = {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 3}]}
    with Client(url, timeout=30) as nn:
        for seed in (1, 2):
            job = nn.train("iris", spec, {"epochs": 20, "seed": seed}, name="dash-iris")
            nn.wait(job["id"], timeout=TRAINING / 1000)
    page.reload()
    group = page.locator(".registered[data-name='dash-iris']")
    group.wait_for()
    assert group.locator("tbody tr").count() == 2
    assert "current: v2" in group.locator("h3").inner_text() and "latest: v2" in group.locator("h3").inner_text()
    assert "current" in group.locator("tr[data-version='2']").inner_text()

    group.locator("tr[data-version='1'] button.make-current").click()  # the rollback
    expect(page.locator(".registered[data-name='dash-iris'] h3")).to_contain_text("current: v1")
    assert "previous: v2" in page.locator(".registered[data-name='dash-iris'] h3").inner_text()

    page.select_option("#predict-model", "dash-iris")
    for name, value in zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], [5.1, 3.5, 1.4, 0.2]):
        page.fill(f"#predict-inputs input[name={name}]", str(value))
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector("#answered-by")
    assert page.inner_text("#answered-by").strip() == "(answered by v1)"
    assert page.problems == []
