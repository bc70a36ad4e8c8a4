"""The dashboard's blueprint: the page and its assets, their types and cache headers; the presets and the
engine's choices."""

from __future__ import annotations

import json
import re

import pytest

from nnserve.engine import reference
from tests.conftest import ROOT


def test_the_page_is_served_at_the_root(client):
    with client.get("/") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert b"<title>nnserve</title>" in response.data


def test_every_asset_the_page_names_is_served(client):
    with client.get("/") as response:
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', response.get_data(as_text=True))
    assert len(assets) == 5  # icon, two stylesheets, two scripts
    for path in assets:
        with client.get(path) as response:
            assert response.status_code == 200, path


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "text/css; charset=utf-8"),
        ("/static/presets.json", "application/json"),
        ("/static/favicon.svg", "image/svg+xml; charset=utf-8"),
    ],
)
def test_our_assets_are_revalidated(client, path, content_type):
    with client.get(path) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == content_type
        assert response.headers["Cache-Control"] == "no-cache"
    with client.get(path, headers={"If-None-Match": response.headers["ETag"]}) as again:
        assert again.status_code == 304 and again.data == b""


def test_vendored_uplot_is_immutable(client):
    with client.get("/static/vendor/uplot-1.6.32/uPlot.iife.min.js") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert set(response.headers["Cache-Control"].split(", ")) == {"public", "max-age=31536000", "immutable"}
        assert response.data.startswith(b"/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    with client.get("/static/vendor/uplot-1.6.32/LICENSE") as response:
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8" and b"MIT License" in response.data


@pytest.mark.parametrize(
    "path",
    [
        "/static/nothing.js",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/vendor/../../cli.py",
        "/static/vendor/README.md",
        "/static/vendor/uplot-1.6.32/..%2f..%2fapp.js",
    ],
)
def test_anything_else_is_a_problem_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"


def test_the_dashboard_is_in_the_api_document_as_pages(client):
    paths = client.get("/openapi.json").json["paths"]
    assert paths["/"]["get"]["summary"] == "The dashboard page."
    assert "text/html" in paths["/"]["get"]["responses"]["200"]["content"]
    assert "404" in paths["/static/{filename}"]["get"]["responses"]
    assert "/static/vendor/{library}/{filename}" in paths


def test_presets_are_the_example_spec_files(client):
    """One source each: the dashboard's presets must say what examples/ says."""
    with client.get("/static/presets.json") as response:
        presets = response.json
    assert set(presets) == {"iris", "blobs", "linear"}
    for name, preset in presets.items():
        assert preset["dataset"] == name
        assert preset["spec"] == json.loads((ROOT / "examples" / f"{name}.json").read_text()), name


def test_the_lists_come_from_the_engine(client):
    """Layer types, activations and optimizers are served from the engine's registries; the page's
    script and HTML hold no list of them of their own."""
    with client.get("/choices.json") as response:
        assert response.status_code == 200 and response.headers["Cache-Control"] == "no-cache"
        assert response.json == reference.choices()
    names = {name for registry in reference.REGISTRIES for name in registry}
    script = (ROOT / "service" / "static" / "app.js").read_text()
    assert 'fetch("/choices.json")' in script
    for literal in re.findall(r"\[([^\[\]]*)\]", script):
        items = re.findall(r'"([a-z_0-9]+)"', literal)
        assert len(items) < 2 or not set(items) <= names, f"app.js lists names of its own: [{literal}]"
    page = (ROOT / "service" / "static" / "index.html").read_text()
    assert not set(re.findall(r"<option[^>]*>([a-z_]+)</option>", page)) & names
