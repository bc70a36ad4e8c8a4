"""Request and response bodies: pydantic models, kept apart (``…Create`` in, ``…Public`` out).

Requests forbid unknown keys, so a typo is a 422 rather than a silent default. A job's
model and training specs are the engine's: their models come from its declarations
(``spec_models``), and the engine checks them (``engine.validate``), so a mistake gets the
same message over HTTP as through ``engine.build``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PlainValidator, Tag, WithJsonSchema

from nnserve.engine.network import INPUT_SCALINGS

from .lifecycle import JobStatus, ModelStatus, ServiceStatus, SweepStatus
from .spec_models import ModelSpec, TrainingSpec

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


def _as_written(value: Any) -> Any:
    return value


def _checked_by_the_engine(schema: type[BaseModel]) -> PlainValidator:
    """The value passed on as the client wrote it, published with ``schema``: the engine checks it, so that
    a mistake has one message whether it comes over HTTP or through ``engine.build`` (see ``spec_models``)."""
    return PlainValidator(_as_written, json_schema_input_type=schema)


ModelSpecAsWritten = Annotated[Any, _checked_by_the_engine(ModelSpec)]
TrainingSpecAsWritten = Annotated[Any, _checked_by_the_engine(TrainingSpec)]


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
    input_scaling: Literal[INPUT_SCALINGS] = "none"  # type: ignore[valid-type]


def model_form(value: Any) -> str:
    """Which form a job's ``model`` takes: a Keras document is a string or has ``class_name``."""
    if isinstance(value, str) or (isinstance(value, dict) and "class_name" in value):
        return "keras-document"
    return "keras-options" if isinstance(value, dict) and "keras" in value else "nnserve-spec"


# The tags are never keys of the input, so ``errors.validation_errors`` leaves them out of locs.
ModelField = Annotated[
    Annotated[ModelSpecAsWritten, Tag("nnserve-spec")]
    | Annotated[KerasModel, Tag("keras-options")]
    | Annotated[KerasDocument, Tag("keras-document")],
    Discriminator(model_form),
]


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
    training: TrainingSpecAsWritten = Field(default_factory=dict)


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
    sweep_id: str | None = Field(None, description="The sweep this job is a trial of.")
    pruned: dict[str, Any] | None = Field(None, description="A pruned trial: `{epoch, rung}` where it stopped.")


class JobList(Page):
    items: list[JobPublic]


# Sweeps --------------------------------------------------------------------------------


class Objective(Request):
    metric: str | None = Field(
        None, description="A value trials log each epoch (`val_accuracy`, `val_loss`, ...); `val_loss` by default."
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="By default: maximize accuracy-like metrics, minimize the rest."
    )


class PrunerSpec(Request):
    name: Literal["none", "median", "asha", "hyperband"]
    min_epochs: int | None = Field(
        None, ge=1, le=100_000, description="No trial is pruned before this many epochs (1)."
    )
    reduction_factor: int | None = Field(
        None, ge=2, le=100, description="ASHA and Hyperband: keep the best 1/this of the trials at each rung (3)."
    )


class SweepCreate(JobCreate):
    """A base job document and how to search around it (see docs/architecture.md, "Sweeps")."""

    search_space: dict[str, Any] = Field(
        description="Dotted paths into the job document, each with one distribution: "
        '`{"uniform": [low, high]}`, `{"log_uniform": [low, high]}`, `{"quniform": [low, high, step]}`, '
        '`{"int": [low, high]}`, `{"int_log": [low, high]}`, `{"qint": [low, high, step]}`, `{"choice": [...]}`.'
    )
    objective: Objective = Field(default_factory=Objective)
    strategy: Literal["grid", "random", "tpe"] = "random"
    trials: int | None = Field(None, ge=1, description="How many trials (required but for a grid: its product).")
    parallelism: int = Field(2, ge=1, le=1000, description="At most this many trials queued or running at once.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="The same seed samples the same trials.")
    pruner: Literal["none", "median", "asha", "hyperband"] | PrunerSpec = "none"
    promote: Literal["always", "never", "if_better"] = Field(
        "if_better", description="The model registry's policy for the winner, registered under `name`."
    )


class SweepBest(BaseModel):
    job_id: str
    parameters: dict[str, Any]
    objective: float


class SweepTrial(BaseModel):
    number: int
    job_id: str | None = Field(description="null for a sampled trial that was not a valid job (see `error`).")
    parameters: dict[str, Any]
    status: JobStatus
    objective: float | None = Field(None, description="The latest value of the objective's metric.")
    epochs: int
    duration_s: float | None = None
    pruned: dict[str, Any] | None = Field(None, description="`{epoch, rung}` of a pruned trial.")
    error: JobFailure | None = None


class SweepPublic(BaseModel):
    id: str
    name: str | None = None
    status: SweepStatus
    dataset_id: str
    search_space: dict[str, Any]
    objective: dict[str, Any]
    strategy: str
    trials_total: int = Field(description="The trials the sweep runs (`trials` as submitted, or the grid's size).")
    parallelism: int
    seed: int
    pruner: dict[str, Any]
    promote: str
    counts: dict[str, int] = Field(description="Trials by status.")
    best: SweepBest | None = None
    winner: dict[str, Any] | None = Field(None, description="The winner handed to the registry, once the sweep ended.")
    trials: list[SweepTrial] | None = Field(None, description="Left out of listings.")
    created_at: str
    finished_at: str | None = None


class SweepList(Page):
    items: list[SweepPublic]


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
