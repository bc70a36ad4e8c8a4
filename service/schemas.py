"""Request and response bodies: pydantic models, kept apart (``…Create`` in, ``…Public`` out).

Requests forbid unknown keys, so a typo is a 422 rather than a silent default. A job's
model and training specs are the engine's: their models come from its declarations
(``spec_models``), and the engine checks them (``engine.validate``), so a mistake gets the
same message over HTTP as through ``engine.build``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from nnserve.engine.network import INPUT_SCALINGS

from .lifecycle import JobStatus, ModelStatus, ServiceStatus, SweepStatus
from .shapes import MAX_RANK, sample_shape_of
from .spec_models import ModelSpec, TrainingSpec

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Label = (
    Annotated[bool, Field(strict=True)]
    | Annotated[int, Field(strict=True)]
    | FiniteFloat
    | Annotated[str, Field(strict=True)]
)
Name = Annotated[str, Field(min_length=1, max_length=200)]


def _not_a_model_id(name: str) -> str:
    if name.startswith("mdl_"):
        raise ValueError("must not start with 'mdl_' (model ids do)")
    return name


RegisteredName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z][A-Za-z0-9._-]{0,63}$", description="A registered model name (never `mdl_…`)."),
    AfterValidator(_not_a_model_id),
]


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
    features: Annotated[list[list[Any]], Field(min_length=1)] = Field(
        description="One sample per row: a list of numbers, or nested lists of any rank (an 8x8 grey image as "
        "[[[0], [3], ...], ...]); every sample the same shape."
    )
    shape: (
        Annotated[list[Annotated[int, Field(strict=True, gt=0)]], Field(min_length=1, max_length=MAX_RANK)] | None
    ) = Field(
        None,
        description="The shape of one sample, like [8, 8, 1] (height, width, channels): flat rows of that many "
        "values are read as samples of it, row-major. Left out: the shape the samples have.",
    )
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
    n_features: int = Field(description="Values in one sample (the product of `sample_shape`).")
    sample_shape: list[int] = Field(description="The shape of one sample: [n_features] for rows, [H, W, C] for images.")
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

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, meta: Any) -> Any:
        """Records stored before sample shapes hold rows: their shape is ``[n_features]``."""
        if isinstance(meta, dict) and "sample_shape" not in meta and "n_features" in meta:
            meta = {**meta, "sample_shape": list(sample_shape_of(meta))}
        return meta


class Page(BaseModel):
    """The paging fields of every list (the ``Link`` header carries the same ``next``, with ``first``,
    ``prev`` and ``last``)."""

    total: int = Field(description="Records in the whole list, on every page.")
    next: str | None = Field(description="Relative URL of the next page; null on the last page.")


class DatasetList(Page):
    items: list[DatasetPublic]


# Jobs ----------------------------------------------------------------------------------


class IfBetter(Request):
    metric: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="A logged value: `val_accuracy`, `val_loss` or any other; lower wins for losses, mae, mse."
    )
    min_delta: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class PromoteIfBetter(Request):
    if_better: IfBetter


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class JobCreate(Request):
    dataset: str = Field(description="Id of the dataset to train on (`iris`, `blobs`, `linear` or an uploaded one).")
    name: RegisteredName | None = Field(
        None,
        description="The registered model name: the model becomes its next version when it is ready "
        "(`^[A-Za-z][A-Za-z0-9._-]{0,63}$`, not starting with `mdl_`).",
    )
    promote: Literal["always", "never"] | PromoteIfBetter | None = Field(
        None,
        description="With a `name`: `always` (the default) makes the new version `current`; `never` leaves "
        '`current` (a first version still becomes it); `{"if_better": {"metric", "min_delta"}}` scores the '
        "new and the current version on the same held-out rows and promotes only a better one.",
    )
    # Left out (None) only with initial_model: ``specs.plan`` says so. Not ``| None``, which would wrap the
    # forms' oneOf in an anyOf with null in the document.
    model: ModelField = Field(
        None,
        description="An nnserve model spec, or a Keras `Sequential` document (object or JSON "
        'text), or `{"keras": <document>, "input_scaling": ...}`. Required unless `initial_model` is given '
        "(then left out, its architecture is copied; given, it must match it layer for layer).",
        json_schema_extra=_no_default,  # null is no form of model: the document states no default
    )
    training: TrainingSpecAsWritten = Field(default_factory=dict)
    initial_model: str | None = Field(
        None,
        description="Warm start: a trained model whose weights, input scaling and labels training continues "
        "from, for `epochs` more epochs. The dataset must have its features and, for classification, only "
        "classes it knows.",
    )


class CancelRequest(Request):
    keep: Literal["none", "best", "last"] = Field(
        "none",
        description="What a running job keeps: nothing (its model is canceled), or the weights of its best epoch "
        "(by the early-stopping monitor, else val_loss, else loss) or of its last finished one, in a ready "
        "model marked `partial`. A queued job has learned nothing: it is canceled whatever this says.",
    )


class Progress(BaseModel):
    epoch: int = Field(description="Epochs finished.")
    epochs: int


class JobFailure(BaseModel):
    type: str
    detail: str


class JobPublic(BaseModel):
    id: str
    name: str | None = None
    version: int | None = Field(None, description="The version of `name` its model became, once ready.")
    promote: Any = Field(None, description="The promotion policy (named jobs).")
    promotion: dict[str, Any] | None = Field(
        None, description='For `if_better`: `{"decision", "metric", "new", "current", "reason"}`.'
    )
    status: JobStatus
    dataset_id: str
    model_id: str
    progress: Progress
    history: dict[str, list[float]] | None = Field(
        None, description="Per-epoch loss, metrics, val_* and learning_rate (left out of listings)."
    )
    error: JobFailure | None = None
    attempts: int = 0
    validation_data: str | None = Field(None, description="The dataset whose rows the job validates on, if any.")
    initial_model: str | None = Field(None, description="Warm start: the id of the model training continued from.")
    initial_epoch: int | None = Field(None, description="Warm start: the epochs the initial model had been trained.")
    cancel_keep: Literal["none", "best", "last"] | None = Field(None, description="What its cancel asked to keep.")
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
    # A sweep's policy is a bare word: its if_better compares on the sweep's own objective (see
    # sweeps.winner_decision), so it takes no metric of its own as a job's does.
    promote: Literal["always", "never", "if_better"] = Field(  # type: ignore[assignment]
        "if_better",
        description="The model registry's policy for the winner, registered under `name`: `always`, `never`, or "
        "`if_better` (the sweep's objective against current's, when both were scored on the same held-out rows).",
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
    sample_shape: list[int] | None = Field(None, description="The shape of one input sample, when it was recorded.")
    feature_names: list[str] | None = None


class ModelOutput(BaseModel):
    kind: Literal["classification", "regression"]
    classes: list[Label] | None = None
    n_outputs: int


class ClassFigures(BaseModel):
    precision: float = Field(
        description="TP / (TP + FP): of the rows predicted this class, the share that are (0 when none is)."
    )
    recall: float = Field(
        description="TP / support: of the rows of this class, the share predicted so (0 without rows)."
    )
    f1: float = Field(description="2 precision recall / (precision + recall) (0 when both are 0).")
    support: int = Field(description="Rows of this class (for the averages: all rows).")


class CalibrationBin(BaseModel):
    mean_predicted: float | None = Field(None, description="Mean top-label confidence of the bin's rows.")
    observed: float | None = Field(None, description="Share of the bin's rows predicted right.")
    count: int

    @model_serializer(mode="wrap")
    def _with_nulls(self, handler: Any) -> Any:
        # Every bin has all three fields, an empty one with nulls, though the API leaves out null fields.
        return {name: getattr(self, name) for name in type(self).model_fields}


class Calibration(BaseModel):
    bins: list[CalibrationBin] = Field(
        description="10 equal-width bins of the top-label confidence q, bin b holding b/10 < q <= (b+1)/10 "
        "(an empty bin has null figures)."
    )
    ece: float = Field(
        description="Expected calibration error: sum over bins of count/rows x |observed - mean_predicted|."
    )


class TargetFigures(BaseModel):
    mae: float
    rmse: float
    r2: float
    residual_quantiles: dict[str, float | None]


class Evaluation(BaseModel):
    """An evaluation report: figures of a model on rows it was not trained on (docs/evaluation.md writes out
    every formula). Classification reports carry the fields from ``labels``
    to ``calibration``; regression ones ``mae`` to ``per_target``."""

    on: str | None = Field(
        description='`"validation"` (the job\'s validation split), `"dataset <id>"` (validation_data, or the '
        "dataset given to /evaluate), or null when the model has no held-out rows (`note` says so)."
    )
    rows: int
    note: str | None = Field(None, description="What the report lacks and why (no held-out rows; over 100 classes).")
    labels: list[Label] | None = Field(None, description="The model's classes, in the order of every table here.")
    confusion_matrix: list[list[int]] | None = Field(None, description="Rows: true labels; columns: predictions.")
    per_class: dict[str, ClassFigures] | None = Field(None, description="By label (as text).")
    macro_avg: ClassFigures | None = Field(None, description="Unweighted mean over the model's classes.")
    weighted_avg: ClassFigures | None = Field(None, description="Mean weighted by each class's support.")
    accuracy: float | None = None
    log_loss: float | None = Field(None, description="-mean log p(true class), p clipped to [eps, 1 - eps].")
    roc_auc: float | None = Field(
        None,
        description="Binary: AUC of the second class's probability; else one-vs-rest macro (left out if undefined).",
    )
    roc_auc_classes: int | None = Field(None, description="Classes the one-vs-rest mean covers (both kinds of rows).")
    calibration: Calibration | None = None
    mae: float | None = Field(None, description="Mean |y - prediction| (mean over targets).")
    rmse: float | None = Field(None, description="Root of the mean squared residual (mean over targets).")
    r2: float | None = Field(None, description="1 - SS_res / SS_tot (mean over targets).")
    residual_quantiles: dict[str, float | None] | None = Field(
        None, description="y - prediction at 5, 25, 50, 75 and 95 % (NumPy's linear method; all residuals pooled)."
    )
    per_target: list[TargetFigures] | None = Field(None, description="Each target's figures, when there are several.")


class ModelPublic(BaseModel):
    id: str
    name: str | None = None
    version: int | None = Field(None, description="Its version under `name`, once ready.")
    status: ModelStatus
    job_id: str | None = Field(description="The job that trained it; absent for an imported model.")
    dataset_id: str | None = Field(description="The dataset it was trained on; absent for an imported model.")
    source: Literal["keras", "nnserve"] | None = Field(
        None, description="Where an imported model came from: a Keras model, or another nnserve's .npz."
    )
    model: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, float] = Field(default_factory=dict, description="Final training (and val_) figures.")
    input: ModelInput
    output: ModelOutput
    n_parameters: int
    initial_model: str | None = Field(None, description="Warm start: the id of the model training continued from.")
    initial_epoch: int | None = Field(None, description="Warm start: the epochs the initial model had been trained.")
    epochs_trained: int | None = Field(None, description="Epochs behind these weights, a warm start's included.")
    partial: bool | None = Field(None, description="True for the weights a canceled job kept (`kept`).")
    kept: Literal["best", "last"] | None = Field(None, description="Which epoch's weights a canceled job kept.")
    kept_epoch: int | None = Field(None, description="The epoch whose weights a canceled job kept (1-based).")
    stopped_epoch: int | None = Field(None, description="The last epoch a canceled job finished (1-based).")
    evaluation: Evaluation | None = Field(
        None, description="The evaluation report on the job's held-out rows, computed when training ended."
    )
    created_at: str
    trained_at: str | None = None


class ModelList(Page):
    items: list[ModelPublic]


class PredictRequest(Request):
    """Send one of: ``inputs``; ``records``; ``columns`` with ``data``. Named features are matched to the
    model's ``feature_names`` in any order; a missing or unknown column is a 422 naming it."""

    inputs: Annotated[list[list[FiniteFloat]], Field(min_length=1)] | None = Field(
        None, description="Rows of features, in the training order."
    )
    records: Annotated[list[dict[str, FiniteFloat]], Field(min_length=1)] | None = Field(
        None, description="One object per row, a value for each of the model's feature names."
    )
    columns: list[str] | None = Field(None, description="The model's feature names, in the order of `data`'s values.")
    data: Annotated[list[list[FiniteFloat]], Field(min_length=1)] | None = Field(
        None, description="Rows of values, in the order of `columns`."
    )


class PredictResponse(BaseModel):
    predictions: list[Label | list[float]] = Field(description="Class labels (classification) or values.")
    probabilities: list[list[float]] | None = Field(None, description="Per class, in the order of the model's classes.")
    model_version: int | None = Field(None, description="The version that answered (registered models only).")


class EvaluateRequest(Request):
    dataset: str


class EvaluateResponse(BaseModel):
    dataset_id: str
    n_samples: int
    loss: float
    metrics: dict[str, float]
    evaluation: Evaluation = Field(description="The evaluation report on the dataset's rows.")


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


# The model registry ------------------------------------------------------------------------

Version = Annotated[int, Field(strict=True, ge=1)]


class AliasSet(Request):
    """Where an alias points: a `version`; or a weighted `split` (`{"3": 90, "4": 10}`: each caller, by
    its routing key, is answered by one version); or a `version` with a `shadow` version that a
    `sample` of the requests also runs through in the background."""

    version: Version | None = None
    split: dict[str, Annotated[float, Field(strict=False, gt=0, allow_inf_nan=False)]] | None = Field(
        None, description="Version number → weight (any positive numbers; shares are weight / total)."
    )
    shadow: Version | None = Field(None, description="Also run this version, in the background, on `sample` of them.")
    sample: Annotated[float, Field(gt=0, le=1)] | None = Field(None, description="Share of requests shadowed (1).")


class RegistryItem(BaseModel):
    name: str
    versions: int = Field(description="How many versions the name holds.")
    aliases: dict[str, Any] = Field(description="Alias → version (or split / shadow target); `latest` derived.")
    created_at: str | None = None
    updated_at: str | None = None


class RegistryList(Page):
    items: list[RegistryItem]


class RegistryVersion(BaseModel):
    version: int
    model_id: str
    status: ModelStatus
    metrics: dict[str, float] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = Field(None, description="The evaluation report's summary, when it has one.")
    promotion: dict[str, Any] | None = Field(None, description="What its job decided about `current`, if asked.")
    job_id: str | None = Field(description="The job that trained it; null for an imported model.")
    dataset_id: str | None = Field(description="The dataset it was trained on; null for an imported model.")
    source: str | None = Field(None, description="Where an imported model came from (`keras`, `nnserve`).")
    created_at: str
    trained_at: str | None = None


class AliasEvent(BaseModel):
    at: str
    alias: str
    from_: Any = Field(None, alias="from")
    to: Any = None
    by: str = Field(description='"api", or "job <id>" for a move made by a job\'s promotion.')


class RegistryDetail(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    versions: list[RegistryVersion] = Field(description="Every version, newest first.")
    aliases: dict[str, Any] = Field(description="Alias → version (or split / shadow target); `latest` derived.")
    created_at: str | None = None
    updated_at: str | None = None
    events: list[AliasEvent] = Field(description="Alias moves, newest first (the last 100).")
    shadow: dict[str, Any] | None = Field(
        None,
        description="Agreement of the shadow with the answering version over the last shadowed requests: "
        "`requests`, `rows`, `label_agreement` (share of equal labels), `mean_abs_diff` (probabilities or values).",
    )


class Aliases(BaseModel):
    name: str
    aliases: dict[str, Any]
