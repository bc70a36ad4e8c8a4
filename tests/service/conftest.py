"""Fixtures the service tests share."""

from __future__ import annotations

import pytest

from tests.service.helpers import LINEAR, train


@pytest.fixture
def iris_model(client, run_jobs) -> str:
    """The id of a model trained on iris (IRIS_MODEL, IRIS_TRAINING) by an in-process worker."""
    job = train(client, run_jobs)
    assert job["status"] == "succeeded"
    return job["model_id"]


@pytest.fixture
def linear_model(client, run_jobs) -> str:
    """The id of a one-feature regressor (feature ``x``) trained on the built-in ``linear`` dataset."""
    response = client.post("/v1/jobs", json=LINEAR)
    assert response.status_code == 202, response.json
    run_jobs()
    return response.json["model_id"]
