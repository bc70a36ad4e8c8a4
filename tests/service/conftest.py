"""Fixtures the service tests share."""

from __future__ import annotations

import pytest

from tests.service.helpers import train


@pytest.fixture
def iris_model(client, run_jobs) -> str:
    """The id of a model trained on iris (IRIS_MODEL, IRIS_TRAINING) by an in-process worker."""
    job = train(client, run_jobs)
    assert job["status"] == "succeeded"
    return job["model_id"]
