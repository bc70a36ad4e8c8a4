"""Hyper-parameter sweeps: a base job, a search space over its fields, and trials that are ordinary jobs.

A sweep is one request (``POST /v1/sweeps``): a job document (``dataset``, ``model``, ``training``) and a
``search_space`` of dotted paths into it, each with a distribution. Everything is checked before anything
is queued (``plan``): each path's parent must exist in the document, and the ends of every distribution
(every ``choice``) must each make a valid job, so a bad space is a 422 naming ``search_space.<path>``.

The search and pruning decisions are Optuna's (ask-and-tell): its samplers (``RandomSampler``,
``TPESampler``), its pruners (median, successive halving as ASHA, Hyperband), and its journal storage,
kept in our own Redis (``RedisJournal``: one list per sweep, ``store.sweep_journal_key``), so the
sampler's state survives a restart of everything with Redis's append-only file. A grid is plain code:
the product of the ``choice`` lists in a fixed order, each point enqueued into the study in turn.

Who drives a sweep: nobody in particular. ``advance`` (under a lock per sweep) tells the study how the
trials that ended did, asks it for new ones while fewer than ``parallelism`` are active, and submits
each as a job on the sweep queue (``queue.SWEEP_QUEUE_NAME``, which workers serve after the ordinary
queue: ordinary jobs go first). The API calls it when the sweep is created or canceled, and when a
sweep is read with no trial active (a sweep a crash stalled between two trials heals when looked at);
each trial calls it as it ends, in its worker (``worker.sweeps``). It is idempotent: calling it again
changes nothing.

Seeds: each trial's sampler is seeded from the sweep's ``seed`` and the trial's number, so the same
seed asks for the same trials (TPE beyond its random start-up trials also depends on what has finished
when it asks: the same with ``parallelism`` 1).

Pruning happens in the trial's worker, at each epoch boundary (``Judge``): the objective is reported to
the study and the pruner asked; a losing trial stops there and ends ``pruned``.

The winner (the best trial that succeeded) is handed to ``register_winner`` when the sweep ends or is
canceled; see its docstring for what it does until the model registry lands.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import optuna
import orjson
import redis
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import TrialState
from pydantic import ValidationError

from . import lifecycle, queue, registry, specs, store
from .errors import Invalid, RequestValidationError
from .lifecycle import ACTIVE, FINISHED, JobStatus, SweepStatus
from .schemas import JobCreate, PrunerSpec, SweepCreate
from .settings import Settings

log = logging.getLogger(__name__)

MAXIMIZED = ("accuracy", "auc", "r2", "precision", "recall", "f1")
"""Metrics where higher is better: an objective naming one (or its ``val_`` version) is maximized unless
its ``direction`` says otherwise."""
DEFAULT_MIN_EPOCHS = 1
DEFAULT_REDUCTION_FACTOR = 3
LOCK_SECONDS = 15
"""How long one ``advance`` may hold a sweep's lock (it takes well under a second): a process killed
while holding it holds up the sweep for at most this long."""


# The search space ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One entry of a search space: the dotted ``path`` into the job document and its distribution."""

    path: str
    kind: str
    args: tuple[Any, ...]

    def distribution(self) -> BaseDistribution:
        low, high, *rest = self.args if self.kind != "choice" else (None, None)
        if self.kind == "uniform":
            return FloatDistribution(low, high)
        if self.kind == "log_uniform":
            return FloatDistribution(low, high, log=True)
        if self.kind == "quniform":
            return FloatDistribution(low, high, step=rest[0])
        if self.kind == "int":
            return IntDistribution(low, high)
        if self.kind == "int_log":
            return IntDistribution(low, high, log=True)
        if self.kind == "qint":
            return IntDistribution(low, high, step=rest[0])
        return CategoricalDistribution(self.args)

    def probes(self) -> list[Any]:
        """Values that must each make a valid job: every choice, or both ends of a range (a quantized
        range's top is the highest step it reaches)."""
        if self.kind == "choice":
            return list(self.args)
        low, high, *rest = self.args
        if rest:
            high = low + math.floor((high - low) / rest[0] + 1e-9) * rest[0]
            high = int(high) if self.kind == "qint" else high
        return [low, high]


KINDS = {
    "uniform": "[low, high]: a float, uniformly",
    "log_uniform": "[low, high]: a float, uniformly in its logarithm (low > 0)",
    "quniform": "[low, high, step]: a float, low + a whole number of steps",
    "int": "[low, high]: a whole number, both ends included",
    "int_log": "[low, high]: a whole number, uniformly in its logarithm (low ≥ 1)",
    "qint": "[low, high, step]: a whole number, low + a whole number of steps",
    "choice": "[value, ...]: one of these (numbers, strings, booleans or null)",
}


def _number(value: Any, whole: bool) -> bool:
    if isinstance(value, bool):
        return False
    if whole:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def dimension(path: str, raw: Any) -> Dimension:
    """``raw`` (``{"uniform": [0, 1]}``) as a Dimension; raises Invalid naming ``search_space.<path>``."""
    loc = f"search_space.{path}"
    kinds = ", ".join(f"{{{kind!r}: {form.split(':')[0]}}}" for kind, form in KINDS.items())
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in KINDS:
        raise Invalid(loc, f"must be one distribution: {kinds}", "distribution")
    kind, args = next(iter(raw.items()))
    form = KINDS[kind]
    if not isinstance(args, list):
        raise Invalid(loc, f"{kind} takes {form}", "distribution")
    if kind == "choice":
        if not args or any(not (a is None or isinstance(a, str | bool | int | float)) for a in args):
            raise Invalid(loc, f"choice takes {form}; received {args!r}", "distribution")
        if len({orjson.dumps(a) for a in args}) != len(args):
            raise Invalid(loc, "choice lists a value twice", "distribution")
        return Dimension(path, kind, tuple(args))
    whole = kind in ("int", "int_log", "qint")
    stepped = kind in ("quniform", "qint")
    if len(args) != (3 if stepped else 2) or not all(_number(a, whole) for a in args):
        raise Invalid(loc, f"{kind} takes {form}; received {args!r}", "distribution")
    low, high = args[0], args[1]
    if low >= high:
        raise Invalid(loc, f"{kind} needs low < high; received {args!r}", "distribution")
    if (kind == "int_log" and low < 1) or (kind == "log_uniform" and low <= 0):
        raise Invalid(loc, f"{kind} needs low > 0 (≥ 1 for int_log); received {args!r}", "distribution")
    if stepped and not (0 < args[2] <= high - low):
        raise Invalid(loc, f"{kind}'s step must be above 0 and at most high - low; received {args!r}", "distribution")
    return Dimension(path, kind, tuple(args))


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """Set the field at dotted ``path`` of ``document`` to ``value``. The parent must exist (a list's
    element by its index, a mapping's key); the field itself may be left out of the document (the
    engine says whether the spec has it). Raises ValueError saying what is missing."""
    parts = path.split(".")
    if parts[0] not in ("model", "training") or len(parts) < 2:
        raise ValueError("a sweep searches fields of the job's model or training: start with 'model.' or 'training.'")
    node: Any = document
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "the document"
        if isinstance(node, list):
            if not (part.isdigit() and int(part) < len(node)):
                raise ValueError(f"{where} has {len(node)} items; there is no item {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif part not in node:
                raise ValueError(f"{where} has no {part!r} (a path's parent must be in the base document)")
            else:
                node = node[part]
        else:
            raise ValueError(f"{where} is {type(node).__name__}, not an object or a list, so it has no {part!r}")


# Planning a sweep -------------------------------------------------------------------------------


def base_document(body: SweepCreate) -> dict[str, Any]:
    """The job document every trial starts from (as the client wrote it; trials register nothing, so
    no ``name``)."""
    training = body.training if body.training is not None else {}
    return {"dataset": body.dataset, "model": copy.deepcopy(body.model), "training": copy.deepcopy(training)}


def trial_records(
    document: dict[str, Any], dataset: dict[str, Any], settings: Settings, tenant: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job and model records for one trial's document, validated as any job is. Raises Invalid."""
    try:
        body = JobCreate.model_validate(document)
    except ValidationError as error:
        raise RequestValidationError(error, document) from None
    return specs.plan(body, dataset, settings, tenant)


def _reason(error: Invalid) -> str:
    return error.detail


def plan(body: SweepCreate, dataset: dict[str, Any], settings: Settings, tenant: str) -> dict[str, Any]:
    """The sweep record for a request, everything checked; raises Invalid naming the field at fault."""
    if not body.search_space:
        raise Invalid("search_space", "is empty: name at least one field to search", "empty")
    base = base_document(body)
    job, _ = trial_records(base, dataset, settings, tenant)  # the base itself, errors at its own fields
    space = [dimension(path, raw) for path, raw in body.search_space.items()]
    for dim in space:
        for value in dim.probes():
            document = copy.deepcopy(base)
            try:
                set_path(document, dim.path, value)
            except ValueError as error:
                raise Invalid(f"search_space.{dim.path}", str(error), "path") from None
            try:
                trial_records(document, dataset, settings, tenant)
            except (Invalid, RequestValidationError) as error:
                raise Invalid(
                    f"search_space.{dim.path}", f"{value!r} makes an invalid job: {error.detail}", "spec_error"
                ) from None

    strategy, trials = body.strategy, body.trials
    if strategy == "grid":
        continuous = [dim.path for dim in space if dim.kind != "choice"]
        if continuous:
            raise Invalid(f"search_space.{continuous[0]}", "a grid takes only choice distributions", "grid_continuous")
        size = math.prod(len(dim.args) for dim in space)
        if trials is not None and trials != size:
            raise Invalid("trials", f"a grid runs its whole product, {size} trials; leave trials out", "grid_trials")
        trials = size
    elif trials is None:
        raise Invalid("trials", f"a {strategy} sweep needs a number of trials", "missing")
    if trials > settings.max_sweep_trials:
        raise Invalid(
            "trials", f"must be at most {settings.max_sweep_trials} (NNSERVE_MAX_SWEEP_TRIALS); received {trials}"
        )
    if settings.max_active_jobs and body.parallelism > settings.max_active_jobs:
        raise Invalid(
            "parallelism",
            f"must be at most {settings.max_active_jobs}, the jobs one tenant may have queued or running "
            "(NNSERVE_MAX_ACTIVE_JOBS)",
        )

    training = job["training"]
    logged = ["loss", *training.get("metrics", [])]
    if training.get("validation_split", 0) > 0:
        logged += [f"val_{name}" for name in logged]
    metric = body.objective.metric or ("val_loss" if "val_loss" in logged else "loss")
    if metric not in logged:
        hint = "" if "val_loss" in logged else " (val_* values need training.validation_split > 0)"
        raise Invalid("objective.metric", f"unknown {metric!r}; trials log {', '.join(map(repr, logged))}{hint}")
    direction = body.objective.direction or ("maximize" if metric.removeprefix("val_") in MAXIMIZED else "minimize")
    pruner = body.pruner if isinstance(body.pruner, PrunerSpec) else PrunerSpec(name=body.pruner)
    if pruner.name == "median" and pruner.reduction_factor is not None:
        raise Invalid("pruner.reduction_factor", "the median pruner has no reduction factor")
    epochs = [job["epochs"], *(v for dim in space if dim.path == "training.epochs" for v in dim.probes())]
    return {
        "id": store.new_id("swp"),
        "tenant": tenant,
        "name": body.name,
        "status": SweepStatus.running,
        "dataset_id": dataset["id"],
        "base": base,
        "search_space": body.search_space,
        "objective": {"metric": metric, "direction": direction},
        "strategy": strategy,
        "trials_total": trials,
        "parallelism": body.parallelism,
        "seed": body.seed
        if body.seed is not None
        else int.from_bytes(hashlib.sha256(store.new_id("").encode()).digest()[:4]),
        "pruner": {
            "name": pruner.name,
            "min_epochs": pruner.min_epochs or DEFAULT_MIN_EPOCHS,
            "reduction_factor": pruner.reduction_factor or DEFAULT_REDUCTION_FACTOR,
            "max_epochs": max(epochs),
        },
        "promote": body.promote,
        "best": None,
        "winner": None,
        "created_at": store.now(),
        "finished_at": None,
    }


# Optuna, on our Redis ----------------------------------------------------------------------------


class RedisJournal(BaseJournalBackend):
    """Optuna's journal of one sweep's study, as a Redis list (``store.sweep_journal_key``): entries are
    appended with one RPUSH (atomic, so concurrent writers interleave whole entries, in one order every
    reader sees) and read by their position, which is what Optuna's ``JournalStorage`` asks of a backend.
    On our own client, so Sentinel, retries and the store's key table apply to it too."""

    def __init__(self, r: redis.Redis, sweep_id: str):
        self._r, self._sweep_id = r, sweep_id

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return [orjson.loads(entry) for entry in store.read_journal(self._r, self._sweep_id, log_number_from)]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        store.append_journal(self._r, self._sweep_id, [orjson.dumps(entry) for entry in logs])


def _quiet() -> None:
    """Optuna logs every trial at INFO; our own records say the same."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage(r: redis.Redis, sweep_id: str) -> JournalStorage:
    return JournalStorage(RedisJournal(r, sweep_id))


def create_study(r: redis.Redis, sweep: dict[str, Any]) -> None:
    """The sweep's (empty) study, in its journal."""
    _quiet()
    optuna.create_study(
        storage=storage(r, sweep["id"]), study_name=sweep["id"], direction=sweep["objective"]["direction"]
    )


def pruner_of(sweep: dict[str, Any]) -> optuna.pruners.BasePruner:
    spec = sweep["pruner"]
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=spec["min_epochs"])
    if spec["name"] == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec["min_epochs"], reduction_factor=spec["reduction_factor"]
        )
    if spec["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec["min_epochs"],
            max_resource=max(spec["max_epochs"], spec["min_epochs"]),
            reduction_factor=spec["reduction_factor"],
        )
    return optuna.pruners.NopPruner()


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler: the same sweep seed asks for the same trials, in any process."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "big")


def sampler_of(sweep: dict[str, Any], number: int) -> optuna.samplers.BaseSampler:
    seed = trial_seed(sweep["seed"], number)
    if sweep["strategy"] == "tpe":
        # constant_liar: trials still running count as bad, so parallel asks spread out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def load_study(r: redis.Redis, sweep: dict[str, Any], number: int = 0) -> optuna.Study:
    _quiet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.load_study(
            study_name=sweep["id"],
            storage=storage(r, sweep["id"]),
            sampler=sampler_of(sweep, number),
            pruner=pruner_of(sweep),
        )


def space_of(sweep: dict[str, Any]) -> list[Dimension]:
    return [dimension(path, raw) for path, raw in sweep["search_space"].items()]


def grid_point(space: Sequence[Dimension], number: int) -> dict[str, Any]:
    """The grid's ``number``-th point: the product of the choices, the last dimension varying fastest."""
    points = itertools.product(*(dim.args for dim in space))
    point = next(itertools.islice(points, number, None))
    return {dim.path: value for dim, value in zip(space, point)}


def suggest(trial: optuna.Trial, dim: Dimension) -> Any:
    """``dim``'s value for ``trial``: the one it already has, else sampled by the study's sampler."""
    low, high, *rest = dim.args if dim.kind != "choice" else (None, None)
    if dim.kind in ("uniform", "log_uniform", "quniform"):
        return trial.suggest_float(dim.path, low, high, log=dim.kind == "log_uniform", step=rest[0] if rest else None)
    if dim.kind in ("int", "int_log", "qint"):
        return trial.suggest_int(dim.path, low, high, log=dim.kind == "int_log", step=rest[0] if rest else 1)
    return trial.suggest_categorical(dim.path, list(dim.args))


def ask(
    r: redis.Redis, sweep: dict[str, Any], number: int, study: optuna.Study | None = None
) -> tuple[dict[str, Any], bool]:
    """The parameters of the study's trial ``number`` (asks are made one at a time, under the sweep's
    lock), and whether the study already knows it ended (see below).

    Asking writes Optuna's journal before our list of trials records the trial, so a crash between the
    two leaves the study one trial ahead. That trial is taken up again rather than asked anew: its
    parameters are those already drawn (any still missing are drawn by its own seeded sampler), so no
    trial is lost or sampled twice and the numbering stays the same."""
    if study is None:
        study = load_study(r, sweep, number)
    else:  # one study object for all of an advance (each load replays the journal), this trial's sampler
        study.sampler = sampler_of(sweep, number)
    space = space_of(sweep)
    known = study.get_trials(deepcopy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(known) > number and known[number].state == TrialState.RUNNING:
            trial = optuna.Trial(study, known[number]._trial_id)
        elif len(known) > number and known[number].state.is_finished():
            return dict(known[number].params), True  # told failed as an invalid job: recorded below again
        else:
            if sweep["strategy"] == "grid" and not any(t.state == TrialState.WAITING for t in known):
                study.enqueue_trial(grid_point(space, number))
            trial = study.ask()
        if trial.number != number:  # the journal and our list of trials disagree: never guess
            raise RuntimeError(f"sweep {sweep['id']}: Optuna numbered the trial {trial.number}, expected {number}")
        return {dim.path: suggest(trial, dim) for dim in space}, False


# Advancing a sweep ---------------------------------------------------------------------------------


def advance(r: redis.Redis, settings: Settings, sweep_id: str) -> None:
    """Bring the sweep up to date, under its lock: tell the study how ended trials did, ask for and
    submit new trials while fewer than ``parallelism`` are active, and end the sweep when every trial
    has ended. Safe to call any time, from any process, any number of times."""
    with r.lock(store.sweep_lock_key(sweep_id), timeout=LOCK_SECONDS, blocking_timeout=2 * LOCK_SECONDS):
        sweep = store.get_sweep(r, sweep_id)
        if sweep is None or sweep["status"] != SweepStatus.running:
            return
        trials = store.sweep_trials(r, sweep_id)
        jobs = _jobs_of(r, trials)
        study = load_study(r, sweep)
        _tell(r, sweep, trials, jobs, study)
        active = sum(1 for job in jobs.values() if job is not None and job["status"] in ACTIVE)
        dataset = store.get_dataset(r, sweep["dataset_id"], sweep["tenant"])
        sweep_queue = queue.make_sweep_queue(r)
        while len(trials) < sweep["trials_total"] and active < sweep["parallelism"] and dataset is not None:
            trial = _submit(r, settings, sweep, dataset, sweep_queue, len(trials), study)
            trials.append(trial)
            active += trial["job_id"] is not None
        if active == 0 and (len(trials) >= sweep["trials_total"] or dataset is None):
            _finish(r, sweep, SweepStatus.succeeded)


def _jobs_of(r: redis.Redis, trials: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    ids = [trial["job_id"] for trial in trials if trial["job_id"] is not None]
    return dict(zip(ids, store.trial_jobs(r, ids)))


def _tell(
    r: redis.Redis, sweep: dict[str, Any], trials: Sequence[dict[str, Any]], jobs: dict[str, Any], study: optuna.Study
) -> None:
    """Tell the study the outcome of every trial whose job ended and that it still takes for running."""
    ended = [t for t in trials if t["job_id"] is not None and (jobs.get(t["job_id"]) or {}).get("status") in FINISHED]
    if not ended:
        return
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    ended = [t for t in ended if t["number"] in running]
    objectives = _objectives(r, sweep, [t["job_id"] for t in ended])
    for trial, objective in zip(ended, objectives):
        status = jobs[trial["job_id"]]["status"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns of a failed trial: our record says why
            if status == JobStatus.succeeded and objective is not None:
                study.tell(trial["number"], objective, skip_if_finished=True)
            elif status == JobStatus.pruned:
                study.tell(trial["number"], state=TrialState.PRUNED, skip_if_finished=True)
            else:
                study.tell(trial["number"], state=TrialState.FAIL, skip_if_finished=True)


def _objectives(r: redis.Redis, sweep: dict[str, Any], job_ids: Sequence[str]) -> list[float | None]:
    """Each job's latest value of the objective's metric (None before its first epoch, or not finite)."""
    metric = sweep["objective"]["metric"]
    values = []
    for logs in store.last_epochs(r, job_ids):
        value = None if logs is None else logs.get(metric)
        values.append(float(value) if value is not None and math.isfinite(value) else None)
    return values


def _submit(
    r: redis.Redis,
    settings: Settings,
    sweep: dict[str, Any],
    dataset: dict[str, Any],
    sweep_queue: Any,
    number: int,
    study: optuna.Study,
) -> dict[str, Any]:
    """Ask for trial ``number`` and submit its job; a sampled document that is not a valid job is told
    to the study as failed and kept in the list with its ``error``, never queued."""
    parameters, told = ask(r, sweep, number, study)
    document = copy.deepcopy(sweep["base"])
    entry: dict[str, Any] = {"number": number, "job_id": None, "parameters": parameters}
    try:
        for path, value in parameters.items():
            set_path(document, path, value)
        job, model = trial_records(document, dataset, settings, sweep["tenant"])
    except (Invalid, RequestValidationError, ValueError) as error:
        detail = error.detail if isinstance(error, Invalid | RequestValidationError) else str(error)
        entry["error"] = {"type": "InvalidTrial", "detail": detail}
        if not told:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.tell(number, state=TrialState.FAIL)
        store.add_sweep_trial(r, sweep["id"], entry)
        return entry
    job.update(sweep_id=sweep["id"], trial=number, parameters=parameters)
    entry["job_id"] = job["id"]
    lifecycle.submit(
        r,
        job,
        model,
        lambda pipe: queue.enqueue_trial(sweep_queue, job["id"], settings, pipe),
        also=lambda pipe: store.add_sweep_trial(pipe, sweep["id"], entry),
    )
    return entry


def _finish(r: redis.Redis, sweep: dict[str, Any], status: SweepStatus) -> None:
    best = summary(r, sweep)["best"]
    fields = {"status": status, "finished_at": store.now(), "best": best}
    store.update_sweep(r, sweep["id"], fields)
    register_winner(r, {**sweep, **fields}, best)


def register_winner(r: redis.Redis, sweep: dict[str, Any], best: dict[str, Any] | None) -> None:
    """Register the sweep's winner (``best``: the best trial that succeeded) under the sweep's ``name``
    as the name's next version, moving ``current`` by the sweep's ``promote`` (``winner_decision``): the
    one place a sweep's model enters the registry, once per sweep, when it ends or is canceled (a second
    call registers nothing new: the model keeps its version). Trials register nothing themselves (their
    jobs have no name). The outcome is kept on the sweep as ``winner``."""
    if best is None or not sweep.get("name"):
        return
    job = store.get_job(r, best["job_id"])
    if job is None:
        return
    decision, promotion = winner_decision(r, sweep, job)
    version = store.register_model(
        r, sweep["tenant"], sweep["name"], job["model_id"], decision, promotion, by=f"sweep {sweep['id']}"
    )
    winner = {
        "job_id": job["id"],
        "model_id": job["model_id"],
        "name": sweep["name"],
        "version": version,
        "promote": sweep["promote"],
        "promotion": promotion,
    }
    store.update_sweep(r, sweep["id"], {"winner": winner})


def winner_decision(r: redis.Redis, sweep: dict[str, Any], job: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """``(decision, record)`` for the winner's registration: ``always`` promotes, ``never`` keeps ``current``
    (a first version still becomes it). ``if_better`` compares the sweep's objective between the winner and
    the version ``current`` points at, and only on the same held-out rows: both trained on the same dataset
    with the same ``validation_split`` and ``seed`` (the split is a function of those), else ``current``
    stays and the record says why."""
    policy = sweep["promote"]
    if policy != "if_better":
        return ("promote" if policy == "always" else "keep"), None
    metric, maximize = sweep["objective"]["metric"], sweep["objective"]["direction"] == "maximize"
    state = store.registry_state(r, sweep["tenant"], sweep["name"])
    target = state.aliases.get(registry.CURRENT)
    current_id = state.versions.get(registry.main_version(target)) if target is not None else None
    current = store.get_model_record(r, current_id) if current_id is not None else None
    new_value = (store.get_model_record(r, job["model_id"]) or {}).get("metrics", {}).get(metric)
    record: dict[str, Any] = {"metric": metric, "new": new_value, "current": None}
    if current is None:
        return "promote", {**record, "decision": "promoted", "reason": "no current version"}
    same_rows = current.get("dataset_id") == job["dataset_id"] and all(
        (current.get("training") or {}).get(field) == job["training"].get(field)
        for field in ("validation_split", "seed")
    )
    current_value = (current.get("metrics") or {}).get(metric)
    record["current"] = current_value
    if not same_rows or new_value is None or current_value is None:
        reason = "current was not scored on the same held-out rows (dataset, validation_split and seed differ)"
        return "keep", {**record, "decision": "kept", "reason": reason}
    better = new_value > current_value if maximize else new_value < current_value
    return ("promote", {**record, "decision": "promoted"}) if better else ("keep", {**record, "decision": "kept"})


def cancel(r: redis.Redis, sweep: dict[str, Any]) -> bool:
    """Cancel the sweep: no new trial starts, queued trials are canceled and running ones stop at their
    next epoch; finished trials are kept, and the best so far goes to ``register_winner``. False when
    the sweep had already ended."""
    with r.lock(store.sweep_lock_key(sweep["id"]), timeout=LOCK_SECONDS, blocking_timeout=2 * LOCK_SECONDS):
        sweep = store.get_sweep(r, sweep["id"]) or sweep
        if sweep["status"] != SweepStatus.running:
            return False
        trials = store.sweep_trials(r, sweep["id"])
        sweep_queue = queue.make_sweep_queue(r)
        for job in _jobs_of(r, trials).values():
            if job is not None and job["status"] in ACTIVE:
                with contextlib.suppress(lifecycle.Refused):  # it ended meanwhile
                    if lifecycle.cancel(r, job) is lifecycle.Move.cancel:
                        queue.discard(sweep_queue, job["id"])
        _finish(r, sweep, SweepStatus.canceled)
        return True


# Reading a sweep --------------------------------------------------------------------------------------


def _seconds(start: str | None, end: str | None) -> float | None:
    if start is None:
        return None
    stop = datetime.fromisoformat(end) if end is not None else datetime.now(UTC)
    return round((stop - datetime.fromisoformat(start)).total_seconds(), 3)


def summary(r: redis.Redis, sweep: dict[str, Any]) -> dict[str, Any]:
    """The sweep as the API shows it: its record, ``counts`` of trials by status, ``best`` so far (among
    trials that succeeded) and ``trials``, each ``{number, job_id, parameters, status, objective, epochs,
    duration_s}`` (``objective``: the latest value of the objective's metric)."""
    trials = store.sweep_trials(r, sweep["id"])
    jobs = _jobs_of(r, trials)
    ids = [t["job_id"] for t in trials if t["job_id"] is not None]
    objectives = dict(zip(ids, _objectives(r, sweep, ids)))
    rows, counts = [], dict.fromkeys(JobStatus, 0)
    for trial in trials:
        job = jobs.get(trial["job_id"]) if trial["job_id"] is not None else None
        row: dict[str, Any] = {
            "number": trial["number"],
            "job_id": trial["job_id"],
            "parameters": trial["parameters"],
            "status": job["status"] if job is not None else JobStatus.failed,
            "objective": objectives.get(trial["job_id"]) if job is not None else None,
            "epochs": job["epoch"] if job is not None else 0,
            "duration_s": _seconds(job["started_at"], job["finished_at"]) if job is not None else None,
        }
        if job is not None and job.get("pruned"):
            row["pruned"] = job["pruned"]
        if job is None and trial.get("error"):
            row["error"] = trial["error"]
        counts[row["status"]] += 1
        rows.append(row)
    maximize = sweep["objective"]["direction"] == "maximize"
    finished = [row for row in rows if row["status"] == JobStatus.succeeded and row["objective"] is not None]
    best = None
    if finished:
        top = (max if maximize else min)(finished, key=lambda row: row["objective"])
        best = {"job_id": top["job_id"], "parameters": top["parameters"], "objective": top["objective"]}
    return {**sweep, "counts": counts, "best": best, "trials": rows}


def stalled(r: redis.Redis, sweep: dict[str, Any]) -> bool:
    """A running sweep with no trial queued or running (a crash came between two trials): ``advance``
    puts it back on its way."""
    if sweep["status"] != SweepStatus.running:
        return False
    jobs = _jobs_of(r, store.sweep_trials(r, sweep["id"]))
    return not any(job is not None and job["status"] in ACTIVE for job in jobs.values())


# Pruning, in the trial's worker ------------------------------------------------------------------------


class Pruned(NamedTuple):
    """The pruner's verdict on a trial: stop now; ``rung``, the successive-halving rung it reached (None
    for the median pruner)."""

    rung: int | None


class Judge:
    """Reports a trial's objective to its study after each epoch and asks the pruner whether to stop.
    Built once per attempt of the trial (in its worker); an attempt resumed from a checkpoint reports
    only the epochs the study has not seen."""

    def __init__(self, r: redis.Redis, job: dict[str, Any]):
        sweep = store.get_sweep(r, job["sweep_id"])
        # Without a pruner there is nothing to decide: no study to load, no journal entry per epoch.
        self.metric: str | None = None
        self.study: optuna.Study | None = None
        if sweep is not None and sweep["pruner"]["name"] != "none":
            self.metric = sweep["objective"]["metric"]
            self.study = load_study(r, sweep, job["trial"])
        self.number = job["trial"]

    def __call__(self, epochs: int, logs: dict[str, float]) -> Pruned | None:
        """``epochs``: how many the trial has trained; ``logs``: the last one's values."""
        if self.study is None or self.metric is None:
            return None
        value = logs.get(self.metric)
        if value is None or not math.isfinite(value):
            return None
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, self.number)
        frozen = storage.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING:
            return None  # told already (the sweep was canceled): nothing to judge
        if epochs not in frozen.intermediate_values:
            storage.set_trial_intermediate_value(trial_id, epochs, float(value))
            frozen = storage.get_trial(trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not self.study.pruner.prune(self.study, frozen):
                return None
        rungs = [
            int(key.rpartition("_")[2]) for key in storage.get_trial(trial_id).system_attrs if "completed_rung_" in key
        ]
        return Pruned(max(rungs) if rungs else None)
