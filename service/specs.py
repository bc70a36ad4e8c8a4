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

from . import shapes, store
from .errors import Invalid, spec_error
from .lifecycle import JobStatus, ModelStatus
from .schemas import JobCreate, KerasModel, model_form
from .settings import Settings
from .shapes import sample_shape_of, training_shape
from .spec_models import NOT_SERVED

DEFAULT_METRICS = {"classification": ["accuracy"], "regression": ["mae"]}


def check(
    model_spec: Any,
    training: dict[str, Any],
    dataset: dict[str, Any],
    settings: Settings,
    invalid: Callable[[engine.SpecError], Invalid] = spec_error,
    validation_data: bool = False,
    width: int | None = None,
):
    """The engine's unbuilt model for these specs and data, within the service's limits (``validation_data``:
    the job validates on a dataset of its own; ``width``: the classes of a warm start's model, which may
    be more than the data's). Raises Invalid (an engine error through ``invalid``, which says where it is
    in the request)."""
    task, data_width = store.task_of(dataset)
    width = data_width if width is None else width
    try:
        model, input_shape = shapes.validate(
            model_spec,
            training,
            sample_shape_of(dataset),
            task=task,
            width=width,
            rows=dataset["n_samples"],
            # Datasets uploaded before class counts were recorded have none: their split is checked
            # when the job starts.
            class_counts=dataset.get("class_counts"),
            validation_data=validation_data,
        )
    except engine.SpecError as error:
        raise invalid(error) from None
    for field, limit in (("epochs", settings.max_epochs), ("batch_size", settings.max_batch_size)):
        value = getattr(model.training, field)
        if value > limit:
            raise Invalid(f"training.{field}", f"must be at most {limit} (the server's limit); received {value}")
    n_parameters = model.parameter_count(input_shape)
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


def plan(
    body: JobCreate,
    dataset: dict[str, Any],
    settings: Settings,
    tenant: str,
    find_dataset: Callable[[str], dict[str, Any] | None] = lambda _id: None,
    initial: dict[str, Any] | None = None,
) -> tuple[dict, dict]:
    """The job and model records for a validated request; ``find_dataset(id)`` gives the metadata of
    another of the tenant's datasets (``training.validation_data``), ``initial`` the record of the
    model ``initial_model`` names (a warm start, checked here by ``check_initial_model``). Raises Invalid."""
    task, _width = store.task_of(dataset)
    classes = dataset.get("classes")
    if initial is not None:
        check_initial_model(initial, dataset)
        classes = initial["output"]["classes"]  # the model keeps its labels; the data's are among them

    training = body.training  # as the client wrote it, but for null fields, which mean "left out": the engine checks it
    validation = None
    if isinstance(training, dict):
        training = {field: value for field, value in training.items() if value is not None}
        if "validation_data" in training:  # the service's to resolve: the engine takes rows, not ids
            value = training.pop("validation_data")
            validation = check_validation_data(value, training, dataset, find_dataset, classes)
        for field, reason in NOT_SERVED.items():
            if field in training:
                raise Invalid(f"training.{field}", f"not offered by this server: {reason}", "not_served")
    if body.model is None:
        if initial is None:
            raise Invalid(
                "model", "required unless initial_model is given (then its architecture is copied)", "missing"
            )
        model_spec, invalid = initial["model"], spec_error
    elif not isinstance(body.model, KerasModel) and model_form(body.model) == "nnserve-spec":
        model_spec, invalid = body.model, spec_error
    else:
        model_spec, training, invalid = from_keras(body.model, training, dataset["n_features"])
    if isinstance(training, dict):
        training.setdefault("metrics", DEFAULT_METRICS[task])
    width = len(initial["output"]["classes"]) if initial is not None and task == "classification" else None
    model = check(model_spec, training, dataset, settings, invalid, validation_data=validation is not None, width=width)
    if initial is not None:
        check_same_architecture(model.spec(), initial)
    promote = promotion_policy(body, model.training.config(), has_validation_data=validation is not None)
    job_id, model_id, created_at = store.new_id("job"), store.new_id("mdl"), store.now()
    config = model.training.config()
    warm_start = {} if initial is None else {"initial_model": initial["id"], "initial_epoch": epochs_trained(initial)}
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
        "validation_data": validation["id"] if validation is not None else None,
        **warm_start,
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
        "output": {"kind": task, "classes": classes, "n_outputs": model.n_outputs},
        "n_parameters": model.parameter_count(training_shape(model, sample_shape_of(dataset))),
        **warm_start,
        "created_at": created_at,
        "trained_at": None,
    }
    return job, record


def promotion_policy(body: JobCreate, training: dict[str, Any], has_validation_data: bool = False) -> Any:
    """The job's ``promote`` as stored: None without a name, ``always`` by default. Raises Invalid for a
    policy without a name, or an ``if_better`` with no held-out rows to compare on."""
    if body.name is None:
        if body.promote is not None:
            raise Invalid("promote", "needs a name: only a registered model's versions are promoted")
        return None
    if body.promote is None or isinstance(body.promote, str):
        return body.promote or "always"
    if not training.get("validation_split") and not has_validation_data:
        raise Invalid(
            "promote",
            "if_better compares the new and the current version on held-out rows, and this job has none: "
            "set training.validation_split (or training.validation_data)",
        )
    return body.promote.model_dump()


def epochs_trained(model: dict[str, Any]) -> int:
    """The epochs behind a ready model's weights (a warm start's included); models stored before this was
    recorded count their job's configured epochs."""
    return int(model.get("epochs_trained") or model["training"]["epochs"])


def check_initial_model(initial: dict[str, Any], dataset: dict[str, Any]) -> None:
    """A warm start's model fits the dataset: trained (it has weights), the same task and features, and
    for classification the dataset's classes among the model's (for regression, as many targets). Raises
    Invalid."""
    if initial["status"] != ModelStatus.ready:
        raise Invalid("initial_model", f"model {initial['id']!r} has no weights: its job is {initial['status']}")
    task, width = store.task_of(dataset)
    if initial["output"]["kind"] != task:
        raise Invalid(
            "initial_model",
            f"{initial['id']!r} is a {initial['output']['kind']} model; dataset {dataset['id']!r} has "
            f"{dataset['target_kind']} targets",
        )
    if initial["input"]["n_features"] != dataset["n_features"]:
        raise Invalid(
            "initial_model",
            f"{initial['id']!r} takes {initial['input']['n_features']} features; dataset {dataset['id']!r} "
            f"has {dataset['n_features']}",
        )
    if task == "classification":
        known = initial["output"]["classes"]
        new = [label for label in dataset["classes"] if label not in known]
        if new:
            raise Invalid(
                "dataset",
                f"has the class {new[0]!r}, which initial_model {initial['id']!r} does not know (it knows "
                f"{known}): a warm start keeps the model's classes; train a new model to add one",
            )
    elif initial["output"]["n_outputs"] != width:
        raise Invalid(
            "initial_model",
            f"{initial['id']!r} predicts {initial['output']['n_outputs']} targets; dataset {dataset['id']!r} "
            f"has {width}",
        )


def check_same_architecture(spec: dict[str, Any], initial: dict[str, Any]) -> None:
    """The job's model spec (normalized) is the initial model's, layer for layer; raises Invalid naming the
    first difference (``model.layers.1.units``)."""
    theirs = initial["model"]
    for key in sorted(set(spec) | set(theirs)):
        if key == "layers":
            continue
        if spec.get(key) != theirs.get(key):
            raise Invalid(
                f"model.{key}", f"is {spec.get(key)!r}; initial_model {initial['id']!r} has {theirs.get(key)!r}"
            )
    ours, their_layers = spec["layers"], theirs["layers"]
    for i, (mine, other) in enumerate(zip(ours, their_layers)):
        for field in [*mine, *(f for f in other if f not in mine)]:
            if mine.get(field) != other.get(field):
                raise Invalid(
                    f"model.layers.{i}.{field}",
                    f"is {mine.get(field)!r}; layer {i} of initial_model {initial['id']!r} has "
                    f"{other.get(field)!r} (a warm start keeps the architecture: leave model out to copy it)",
                )
    if len(ours) != len(their_layers):
        raise Invalid(
            "model.layers",
            f"has {len(ours)} layers; initial_model {initial['id']!r} has {len(their_layers)} "
            "(a warm start keeps the architecture: leave model out to copy it)",
        )


def check_validation_data(
    value: Any,
    training: dict[str, Any],
    dataset: dict[str, Any],
    find_dataset: Callable[[str], dict[str, Any] | None],
    classes: list[Any] | None = None,
) -> dict[str, Any]:
    """The metadata of the dataset ``training.validation_data`` names, once it fits the training
    ``dataset``: the same features, the same kind of targets (as many columns), and for
    classification only classes the model will know (``classes``, else the dataset's). Raises Invalid."""
    loc = "training.validation_data"
    if training.get("validation_split"):
        raise Invalid(loc, "give validation_split or validation_data, not both")
    if not isinstance(value, str):
        raise Invalid(loc, f"must be the id of a dataset; received {value!r}")
    meta = find_dataset(value)
    if meta is None:
        raise Invalid(loc, f"no dataset {value!r}")
    if meta["n_features"] != dataset["n_features"]:
        raise Invalid(
            loc, f"{value!r} has {meta['n_features']} features; the training data has {dataset['n_features']}"
        )
    if meta["target_kind"] != dataset["target_kind"]:
        raise Invalid(
            loc, f"{value!r} has {meta['target_kind']} targets; the training data has {dataset['target_kind']}"
        )
    if meta["target_kind"] == "categorical":
        known = dataset["classes"] if classes is None else classes
        new = [label for label in meta["classes"] if label not in known]
        if new:
            raise Invalid(loc, f"{value!r} has the class {new[0]!r}, which the model will not know; it knows {known}")
    elif meta["n_targets"] != dataset["n_targets"]:
        raise Invalid(loc, f"{value!r} has {meta['n_targets']} targets; the training data has {dataset['n_targets']}")
    return meta


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
