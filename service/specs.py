"""From a job request to the records we store: the specs checked by the engine, defaults filled in.

The engine owns the defaults (Keras's) and the semantic checks; we pass it only what the
client wrote, add the service's own defaults (metrics) and limits, and keep the engine's
normalized specs (seed included) so that the worker, and anyone reading the job later,
sees exactly what will be trained.

A Keras document is converted by ``engine.from_keras`` first; its ``compile_config`` fills what
``training`` leaves out. Only the converted spec is stored: it states exactly what is trained, and
everything else in the document is either ignored on purpose (names, seeds) or refused. Errors
name places in the document as the client wrote it (``model.config.layers.1.config.units``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from nnserve import engine

from . import store
from .errors import Invalid, spec_error
from .lifecycle import JobStatus, ModelStatus
from .schemas import JobCreate, KerasModel, model_form
from .settings import Settings
from .shapes import sample_shape_of
from .spec_models import NOT_SERVED

DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["mae"]}


def check(
    model_spec: Any,
    training: dict[str, Any],
    dataset: dict[str, Any],
    settings: Settings,
    invalid: Callable[[engine.SpecError], Invalid] = spec_error,
):
    """The engine's unbuilt model for these specs and data, within the service's limits. Raises Invalid
    (an engine error through ``invalid``, which says where it is in the request)."""
    task, width = store.task_of(dataset)
    try:
        model = engine.validate(
            model_spec,
            training,
            n_features=dataset["n_features"],
            task=task,
            width=width,
            rows=dataset["n_samples"],
            # Datasets uploaded before class counts were recorded have none: their split is checked
            # when the job starts.
            class_counts=dataset.get("class_counts"),
        )
    except engine.SpecError as error:
        raise invalid(error) from None
    for field, limit in (("epochs", settings.max_epochs), ("batch_size", settings.max_batch_size)):
        value = getattr(model.training, field)
        if value > limit:
            raise Invalid(f"training.{field}", f"must be at most {limit} (the server's limit); received {value}")
    n_parameters = model.parameter_count(dataset["n_features"])
    if n_parameters > settings.max_parameters:
        raise Invalid(
            "model.layers", f"the model has {n_parameters} parameters; the server's limit is {settings.max_parameters}"
        )
    config = model.training.config()
    rows = round(dataset["n_samples"] * (1 - config["validation_split"]))
    compute = config["epochs"] * rows * n_parameters
    if compute > settings.max_compute:
        raise Invalid(
            "training.epochs",
            f"{config['epochs']} epochs x {rows} training rows x {n_parameters} parameters "
            f"= {compute:.3g}, over the server's compute budget of {settings.max_compute:.3g} per job "
            "(NNSERVE_MAX_COMPUTE): train fewer epochs, on fewer rows, or a smaller model",
        )
    return model


def plan(body: JobCreate, dataset: dict[str, Any], settings: Settings, tenant: str) -> tuple[dict, dict]:
    """The job and model records for a validated request. Raises Invalid."""
    task, _width = store.task_of(dataset)
    training = body.training  # as the client wrote it, but for null fields, which mean "left out": the engine checks it
    if isinstance(training, dict):
        training = {field: value for field, value in training.items() if value is not None}
        for field, reason in NOT_SERVED.items():
            if field in training:
                raise Invalid(f"training.{field}", f"not offered by this server: {reason}", "not_served")
    if not isinstance(body.model, KerasModel) and model_form(body.model) == "nnserve-spec":
        model_spec, invalid = body.model, spec_error
    else:
        model_spec, training, invalid = from_keras(body.model, training, dataset["n_features"])
    if isinstance(training, dict):
        training.setdefault("metrics", DEFAULT_METRICS[task])
    model = check(model_spec, training, dataset, settings, invalid)
    promote = promotion_policy(body, model.training.config())
    job_id, model_id, created_at = store.new_id("job"), store.new_id("mdl"), store.now()
    config = model.training.config()
    job = {
        "id": job_id,
        "tenant": tenant,
        "name": body.name,
        "promote": promote,
        "dataset_id": dataset["id"],
        "model_id": model_id,
        "status": JobStatus.queued,
        "task": task,
        "model": model.spec(),
        "training": config,
        "epoch": 0,
        "epochs": config["epochs"],
        "attempts": 0,
        "error": None,
        "cancel_requested": False,
        "checkpoint_every": settings.checkpoint_every,
        "created_at": created_at,
        "started_at": None,
        "finished_at": None,
    }
    record = {
        "id": model_id,
        "tenant": tenant,
        "name": body.name,
        "job_id": job_id,
        "dataset_id": dataset["id"],
        "status": ModelStatus.pending,
        "model": model.spec(),
        "training": config,
        "metrics": {},
        "input": {
            "n_features": dataset["n_features"],
            "sample_shape": list(sample_shape_of(dataset)),
            "feature_names": dataset.get("feature_names"),
        },
        "output": {"kind": task, "classes": dataset.get("classes"), "n_outputs": model.n_outputs},
        "n_parameters": model.parameter_count(dataset["n_features"]),
        "created_at": created_at,
        "trained_at": None,
    }
    return job, record


def promotion_policy(body: JobCreate, training: dict[str, Any]) -> Any:
    """The job's ``promote`` as stored: None without a name, ``always`` by default. Raises Invalid for a
    policy without a name, or an ``if_better`` with no held-out rows to compare on."""
    if body.name is None:
        if body.promote is not None:
            raise Invalid("promote", "needs a name: only a registered model's versions are promoted")
        return None
    if body.promote is None or isinstance(body.promote, str):
        return body.promote or "always"
    if not training.get("validation_split") and not training.get("validation_data"):
        raise Invalid(
            "promote",
            "if_better compares the new and the current version on held-out rows, and this job has none: "
            "set training.validation_split (or training.validation_data)",
        )
    return body.promote.model_dump()


def from_keras(model: KerasModel | dict[str, Any] | str, training: Any, n_features: int):
    """``(model spec, training, invalid)`` from a Keras document, bare or in ``{"keras": ...}``, and the
    job's ``training``, whose fields win over the document's ``compile_config``; ``invalid`` turns an
    engine error into an Invalid naming the place in the document (or in ``training``) it comes from.
    Raises Invalid for a document that cannot be converted or does not fit the data's width."""
    root = "model.keras" if isinstance(model, KerasModel) else "model"
    document = model.keras if isinstance(model, KerasModel) else model
    if isinstance(document, str):
        try:
            document = orjson.loads(document)
        except orjson.JSONDecodeError as error:
            raise Invalid(root, f"is not valid JSON: {error}", "json_invalid") from None
    try:
        imported = engine.from_keras(document)
    except engine.SpecError as error:
        raise spec_error(error, root) from None
    spec = imported.spec
    if isinstance(model, KerasModel):
        spec["input_scaling"] = model.input_scaling
    layers = document["config"]["layers"]
    inputs = [i for i, layer in enumerate(layers) if layer.get("class_name") == "InputLayer"]
    if imported.input_dim is not None and imported.input_dim != n_features:
        raise Invalid(
            f"{root}.config.layers.{inputs[0]}.config.batch_shape",
            f"the model takes {imported.input_dim} features; the dataset has {n_features}",
        )
    given = training if isinstance(training, dict) else {}
    # The converted spec's layer i is the document's i-th layer that is not an InputLayer.
    converted = [i for i, layer in enumerate(layers) if layer.get("class_name") != "InputLayer"]

    def invalid(error: engine.SpecError) -> Invalid:
        loc = error.loc
        if len(loc) >= 2 and loc[0] == "layers" and isinstance(loc[1], int) and loc[1] < len(converted):
            loc = ("config", "layers", converted[loc[1]], "config", *loc[2:])
        elif len(loc) >= 2 and loc[0] == "training" and loc[1] in imported.training and loc[1] not in given:
            loc = ("compile_config", *loc[1:])
        return spec_error(engine.SpecError(loc, error.message), root)

    return spec, {**imported.training, **given} if isinstance(training, dict) else training, invalid
