"""From a job request to the records we store: the specs checked by the engine, defaults filled in.

The engine owns the defaults (Keras's) and the semantic checks; we pass it only what the
client wrote, add the service's own defaults (metrics) and limits, and keep the engine's
normalized specs (seed included) so that the worker, and anyone reading the job later,
sees exactly what will be trained.
"""
from __future__ import annotations

from typing import Any

import engine

from . import store
from .errors import Invalid, spec_error
from .schemas import JobCreate
from .settings import Settings

DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["mae"]}


def check(model_spec: dict[str, Any], training: dict[str, Any], dataset: dict[str, Any], settings: Settings):
    """The engine's unbuilt model for these specs and data, within the service's limits. Raises Invalid."""
    task, width = store.task_of(dataset)
    for field, limit in (("epochs", settings.max_epochs), ("batch_size", settings.max_batch_size)):
        if training.get(field, 1) > limit:
            raise Invalid(f"training.{field}", f"must be at most {limit} (the server's limit); received {training[field]}")
    try:
        model = engine.validate(model_spec, training, n_features=dataset["n_features"], task=task, width=width)
    except engine.SpecError as error:
        raise spec_error(error) from None
    n_parameters = model.parameter_count(dataset["n_features"])
    if n_parameters > settings.max_parameters:
        raise Invalid("model.layers", f"the model has {n_parameters} parameters; the server's limit is {settings.max_parameters}")
    config = model.training.config()
    rows = round(dataset["n_samples"] * (1 - config["validation_split"]))
    compute = config["epochs"] * rows * n_parameters
    if compute > settings.max_compute:
        raise Invalid("training.epochs", f"{config['epochs']} epochs x {rows} training rows x {n_parameters} parameters "
                      f"= {compute:.3g}, over the server's compute budget of {settings.max_compute:.3g} per job "
                      "(NNSERVE_MAX_COMPUTE): train fewer epochs, on fewer rows, or a smaller model")
    return model


def plan(body: JobCreate, dataset: dict[str, Any], settings: Settings, tenant: str) -> tuple[dict, dict]:
    """The job and model records for a validated request. Raises Invalid."""
    task, width = store.task_of(dataset)
    model_spec = body.model.model_dump(exclude_unset=True, exclude_none=True)
    training = body.training.model_dump(exclude_unset=True, exclude_none=True)
    training.setdefault("metrics", DEFAULT_METRICS[task])
    model = check(model_spec, training, dataset, settings)
    job_id, model_id, created_at = store.new_id("job"), store.new_id("mdl"), store.now()
    config = model.training.config()
    job = {
        "id": job_id, "tenant": tenant, "name": body.name, "dataset_id": dataset["id"], "model_id": model_id,
        "status": "queued", "task": task, "model": model.spec(), "training": config,
        "epoch": 0, "epochs": config["epochs"], "attempts": 0, "error": None, "cancel_requested": False,
        "checkpoint_every": settings.checkpoint_every, "created_at": created_at, "started_at": None, "finished_at": None,
    }
    record = {
        "id": model_id, "tenant": tenant, "name": body.name, "job_id": job_id, "dataset_id": dataset["id"],
        "status": "pending", "model": model.spec(), "training": config, "metrics": {},
        "input": {"n_features": dataset["n_features"], "feature_names": dataset.get("feature_names")},
        "output": {"kind": task, "classes": dataset.get("classes"), "n_outputs": model.n_outputs},
        "n_parameters": model.parameter_count(dataset["n_features"]), "created_at": created_at, "trained_at": None,
    }
    return job, record
