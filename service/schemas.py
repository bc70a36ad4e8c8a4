"""Request and response bodies: pydantic models, kept apart (``…Create`` in, ``…Public`` out).

Requests forbid unknown keys, so a typo is a 422 rather than a silent default. Names of
layers, activations, losses, optimizers and metrics are taken from the engine's own
registries; the engine then checks what only it knows (a parameter of a given optimizer,
the output width against the classes, the loss against the task) in ``engine.validate``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, WithJsonSchema

from nnserve.engine.activations import ACTIVATIONS
from nnserve.engine.initializers import INITIALIZERS
from nnserve.engine.layers import LAYERS
from nnserve.engine.losses import LOSSES
from nnserve.engine.metrics import METRICS
from nnserve.engine.optimizers import OPTIMIZERS

from .lifecycle import JobStatus, ModelStatus, ServiceStatus


def _choice(names) -> Any:
    return Literal[tuple(names)]  # type: ignore[valid-type]


FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Label = (
    Annotated[bool, Field(strict=True)]
    | Annotated[int, Field(strict=True)]
    | FiniteFloat
    | Annotated[str, Field(strict=True)]
)
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """A named engine object whose other parameters the engine checks (unknown ones are still errors)."""

    model_config = ConfigDict(extra="allow")


def _named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def Named(model: type[BaseModel]) -> Any:
    """``model`` that may also be written as its bare name: ``"relu"`` means ``{"name": "relu"}``."""
    return Annotated[model, BeforeValidator(_named, json_schema_input_type=str | model)]


class ActivationSpec(Open):
    name: _choice(ACTIVATIONS)


class InitializerSpec(Open):
    name: _choice(INITIALIZERS)


class LossSpec(Open):
    name: _choice(LOSSES)
    from_logits: bool | None = None


class OptimizerSpec(Open):
    name: _choice(OPTIMIZERS)
    learning_rate: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class Regularizer(Request):
    l1: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    l2: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class DenseLayer(Request):
    type: Literal["dense"]
    units: Annotated[int, Field(strict=True, gt=0)]
    activation: Named(ActivationSpec) = ActivationSpec(name="linear")
    use_bias: bool = True
    kernel_initializer: Named(InitializerSpec) = InitializerSpec(name="glorot_uniform")
    bias_initializer: Named(InitializerSpec) = InitializerSpec(name="zeros")
    kernel_regularizer: Literal["l1", "l2"] | Regularizer | None = None


class DropoutLayer(Request):
    type: Literal["dropout"]
    rate: Annotated[float, Field(ge=0, lt=1)]


class ActivationLayer(Request):
    type: Literal["activation"]
    activation: Named(ActivationSpec)


Layer = Annotated[DenseLayer | DropoutLayer | ActivationLayer, Field(discriminator="type")]
assert {"dense", "dropout", "activation"} == set(LAYERS), "a layer type is missing from the API schema"


class ModelSpec(Request):
    layers: Annotated[list[Layer], Field(min_length=1)]
    input_scaling: Literal["standard", "none"] = "standard"
    dtype: Literal["float32", "float64"] = "float32"


# The object's schema asks for what only a Keras document has, so that ``model`` matches exactly one form.
KerasObject = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "required": ["class_name", "config"],
            "properties": {"class_name": {"type": "string", "enum": ["Sequential"]}, "config": {"type": "object"}},
        }
    ),
]
KerasDocument = Annotated[
    KerasObject | str,
    Field(
        description="A Keras 3 `Sequential` `model.to_json()` document: the parsed object or the JSON text. "
        'Checked and converted by `engine.from_keras`; see docs/spec.md, "Keras documents".'
    ),
]


class KerasModel(Request):
    """A Keras document with nnserve's options: ``input_scaling`` (``"none"`` by default, as in Keras)."""

    keras: KerasDocument
    input_scaling: Literal["standard", "none"] = "none"


def _model_form(value: Any) -> str:
    """Which form a job's ``model`` takes: a Keras document is a string or has ``class_name``."""
    if isinstance(value, str) or (isinstance(value, dict) and "class_name" in value):
        return "keras-document"
    return "keras-options" if isinstance(value, dict) and "keras" in value else "nnserve-spec"


# The tags are never keys of the input, so ``errors.validation_errors`` leaves them out of locs.
ModelField = Annotated[
    Annotated[ModelSpec, Tag("nnserve-spec")]
    | Annotated[KerasModel, Tag("keras-options")]
    | Annotated[KerasDocument, Tag("keras-document")],
    Discriminator(_model_form),
]


class EarlyStopping(Request):
    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 0
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    restore_best: bool = False
    start_from_epoch: Annotated[int, Field(ge=0)] = 0


class ReduceLROnPlateau(Request):
    monitor: str = "val_loss"
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    patience: Annotated[int, Field(ge=0)] = 10
    min_delta: Annotated[float, Field(ge=0)] = 1e-4
    cooldown: Annotated[int, Field(ge=0)] = 0
    min_lr: Annotated[float, Field(ge=0)] = 0.0


class TrainingSpec(Request):
    """Keras's defaults where a field is absent; ``loss`` is chosen from the task and output layer,
    ``metrics`` default to accuracy (classification) or mae (regression), ``seed`` is drawn and kept."""

    loss: Named(LossSpec) | None = None
    optimizer: Named(OptimizerSpec) = OptimizerSpec(name="rmsprop")
    epochs: Annotated[int, Field(strict=True, gt=0)] = 1
    batch_size: Annotated[int, Field(strict=True, gt=0)] = 32
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.0
    shuffle: bool = True
    seed: Annotated[int, Field(strict=True, ge=0, lt=2**63)] | None = None
    metrics: list[_choice(METRICS)] | None = None
    class_weight: Literal["balanced"] | dict[str, Annotated[float, Field(ge=0)]] | None = None
    early_stopping: EarlyStopping | None = None
    reduce_lr_on_plateau: ReduceLROnPlateau | None = None


# Datasets ------------------------------------------------------------------------------

TargetKind = Literal["categorical", "continuous"]


class DatasetCreate(Request):
    """A dataset as JSON. (A CSV file is uploaded as multipart: ``file``, ``target``, ``name``, ``target_kind``.)

    The document's model: the route never builds a whole body as Python objects. ``json_upload`` reads
    ``features`` and ``targets`` straight into arrays, and validates the other fields with this model."""

    name: Name | None = None
    features: Annotated[list[list[FiniteFloat]], Field(min_length=1)]
    targets: Annotated[
        Annotated[list[Label], Field(min_length=1)] | Annotated[list[list[FiniteFloat]], Field(min_length=1)],
        Field(
            description="A label per row (strings of at most 200 characters, numbers or booleans; at most "
            "10,000 distinct ones as classes), or a row of numbers per row for several continuous targets."
        ),
    ]
    feature_names: list[Name] | None = None
    target_kind: TargetKind | None = None


class DatasetPublic(BaseModel):
    id: str
    name: str
    n_samples: int
    n_features: int
    n_targets: int = Field(description="Target columns (1 for labels or a single value).")
    target_kind: TargetKind
    target_kind_inferred: bool = Field(description="True when nnserve decided the kind; `note` says how.")
    note: str | None = None
    classes: list[Label] | None = None
    class_counts: list[int] | None = Field(None, description="Rows of each class, in the order of `classes`.")
    feature_names: list[str] | None = None
    target_name: str | None = None
    builtin: bool = False
    created_at: str


class Page(BaseModel):
    """The paging fields of every list (the ``Link`` header carries the same ``next``, with ``first``,
    ``prev`` and ``last``)."""

    total: int = Field(description="Records in the whole list, on every page.")
    next: str | None = Field(description="Relative URL of the next page; null on the last page.")


class DatasetList(Page):
    items: list[DatasetPublic]


# Jobs ----------------------------------------------------------------------------------


class JobCreate(Request):
    dataset: str = Field(description="Id of the dataset to train on (`iris`, `blobs`, `linear` or an uploaded one).")
    name: Name | None = None
    model: ModelField = Field(
        description="An nnserve model spec, or a Keras `Sequential` document (object or JSON "
        'text), or `{"keras": <document>, "input_scaling": ...}`.'
    )
    training: TrainingSpec = TrainingSpec()


class Progress(BaseModel):
    epoch: int = Field(description="Epochs finished.")
    epochs: int


class JobFailure(BaseModel):
    type: str
    detail: str


class JobPublic(BaseModel):
    id: str
    name: str | None = None
    status: JobStatus
    dataset_id: str
    model_id: str
    progress: Progress
    history: dict[str, list[float]] | None = Field(
        None, description="Per-epoch loss, metrics, val_* and learning_rate (left out of listings)."
    )
    error: JobFailure | None = None
    attempts: int = 0
    model: dict[str, Any] = Field(description="The model spec with every default filled in.")
    training: dict[str, Any] = Field(description="The training config with every default filled in, seed included.")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None


class JobList(Page):
    items: list[JobPublic]


# Models --------------------------------------------------------------------------------


class ModelInput(BaseModel):
    n_features: int
    feature_names: list[str] | None = None


class ModelOutput(BaseModel):
    kind: Literal["classification", "regression"]
    classes: list[Label] | None = None
    n_outputs: int


class ModelPublic(BaseModel):
    id: str
    name: str | None = None
    status: ModelStatus
    job_id: str
    dataset_id: str
    model: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, float] = Field(default_factory=dict, description="Final training (and val_) figures.")
    input: ModelInput
    output: ModelOutput
    n_parameters: int
    created_at: str
    trained_at: str | None = None


class ModelList(Page):
    items: list[ModelPublic]


class PredictRequest(Request):
    inputs: Annotated[list[list[FiniteFloat]], Field(min_length=1)] = Field(description="Rows of features.")


class PredictResponse(BaseModel):
    predictions: list[Label | list[float]] = Field(description="Class labels (classification) or values.")
    probabilities: list[list[float]] | None = Field(None, description="Per class, in the order of the model's classes.")


class EvaluateRequest(Request):
    dataset: str


class EvaluateResponse(BaseModel):
    dataset_id: str
    n_samples: int
    loss: float
    metrics: dict[str, float]


# Operations ----------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class RedisMemory(BaseModel):
    used_bytes: int
    max_bytes: int = Field(description="Redis's maxmemory; 0: no limit.")
    full: bool = Field(description="At its maxmemory: writes get 507 until memory is freed or raised.")
    eviction_policy: str = Field(description="Redis's maxmemory-policy; nnserve needs `noeviction`.")


class Readiness(BaseModel):
    status: ServiceStatus
    redis: bool
    memory: RedisMemory | None = Field(None, description="Redis's memory, when it answered.")
    warnings: list[str] = Field(default_factory=list, description="What an operator should fix.")


class Problem(BaseModel):
    """``application/problem+json`` (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(None, description="422 only: each with `loc`, `msg`, `type`.")
    request_id: str | None = Field(None, description="The request's X-Request-ID, as in the server's log lines.")
