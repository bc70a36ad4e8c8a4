"""The job lifecycle against a real Redis: each allowed move does what its row says, each refused
move changes nothing, and the status words live in one module."""

from __future__ import annotations

import json
import re

import pytest

from nnserve import client as api_client
from nnserve.service import lifecycle, store
from nnserve.service.lifecycle import FINISHED, JobStatus, ModelStatus, Move
from tests.conftest import ROOT

LEASE = "lease-of-the-attempt"
ERROR = {"type": "Boom", "detail": "it broke"}
TRAINED = {"trained_at": "2025-01-01T00:00:00.000+00:00"}

queued, running, succeeded, failed, canceled, pruned = (
    JobStatus.queued,
    JobStatus.running,
    JobStatus.succeeded,
    JobStatus.failed,
    JobStatus.canceled,
    JobStatus.pruned,
)
ALLOWED = {
    Move.start: {queued, running},
    Move.requeue: {running},
    Move.cancel: {queued},
    Move.request_cancel: {running},
    Move.honour_cancel: {queued, running},
    Move.fail: {queued, running},
    Move.succeed: {running},
    Move.cancel_keeping: {running},
    Move.prune: {running},
}


def new_job(redis) -> dict:
    """A job just submitted: queued, its model pending."""
    created = store.now()
    job = {
        "id": store.new_id("job"),
        "model_id": store.new_id("mdl"),
        "tenant": store.PUBLIC,
        "status": queued,
        "attempts": 0,
        "epoch": 0,
        "error": None,
        "cancel_requested": False,
        "created_at": created,
        "started_at": None,
        "finished_at": None,
    }
    model = {"id": job["model_id"], "tenant": store.PUBLIC, "job_id": job["id"], "status": ModelStatus.pending}
    lifecycle.submit(redis, job, {**model, "created_at": created}, enqueue=lambda pipe: None)
    return store.get_job(redis, job["id"])


def job_in(redis, status: JobStatus) -> dict:
    """A job brought to ``status`` by one attempt holding LEASE, which saved a checkpoint on the way."""
    job = new_job(redis)
    assert lifecycle.start(redis, job, LEASE) == (True, queued)
    store.save_checkpoint(redis, job["id"], LEASE, b"checkpoint", 1)
    moved = {
        queued: lambda: lifecycle.requeue(redis, job, ERROR),
        running: lambda: True,
        succeeded: lambda: lifecycle.succeed(redis, job, LEASE, b"weights", TRAINED, [{"loss": 1.0}]),
        failed: lambda: lifecycle.fail(redis, job, ERROR),
        canceled: lambda: lifecycle.honour_cancel(redis, job),
        pruned: lambda: lifecycle.prune(redis, job, LEASE, 1, 0),
    }[status]()
    assert moved
    return store.get_job(redis, job["id"])


def model_status(redis, job: dict) -> str:
    return store.get_model(redis, job["model_id"], store.PUBLIC)["status"]


def counts(redis) -> dict[str, int]:
    return {status: n for status, n in store.job_counts(redis).items() if n}


def has_checkpoint(redis, job: dict) -> bool:
    return store.load_checkpoint(redis, job["id"]) is not None


def snapshot(redis, job: dict) -> tuple:
    return (
        redis.hgetall(store.job_key(job["id"])),
        model_status(redis, job),
        counts(redis),
        has_checkpoint(redis, job),
    )


def test_the_table_allows_these_moves_and_no_others():
    assert {move: move.value.sources for move in Move} == ALLOWED
    assert {queued, running} == lifecycle.ACTIVE
    assert {succeeded, failed, canceled, pruned} == FINISHED


# Allowed moves ---------------------------------------------------------------------------------


def test_start_claims_a_queued_job(redis):
    job = new_job(redis)
    assert lifecycle.start(redis, job, LEASE) == (True, queued)
    after = store.get_job(redis, job["id"])
    assert after["status"] == running and after["attempts"] == 1 and after["lease"] == LEASE
    assert after["started_at"] is not None
    assert model_status(redis, job) == ModelStatus.pending and counts(redis) == {running: 1}


def test_start_takes_over_a_running_job_with_a_new_lease(redis):
    """RQ may hand out again a job whose worker died before our record moved back to queued."""
    job = job_in(redis, running)
    assert lifecycle.start(redis, job, "lease-of-the-next-attempt") == (True, running)
    after = store.get_job(redis, job["id"])
    assert after["attempts"] == 2 and after["lease"] == "lease-of-the-next-attempt"
    assert counts(redis) == {running: 1} and has_checkpoint(redis, job)


def test_requeue_sends_a_running_job_back_with_its_reason_and_checkpoint(redis):
    job = job_in(redis, running)
    assert lifecycle.requeue(redis, job, ERROR, lease=LEASE)
    after = store.get_job(redis, job["id"])
    assert after["status"] == queued and after["error"] == ERROR and after["finished_at"] is None
    assert model_status(redis, job) == ModelStatus.pending and counts(redis) == {queued: 1}
    assert has_checkpoint(redis, job)  # the retry resumes from it


def test_cancel_of_a_queued_job_cancels_it_and_its_model_at_once(redis):
    job = new_job(redis)
    assert lifecycle.cancel(redis, job) is Move.cancel
    after = store.get_job(redis, job["id"])
    assert after["status"] == canceled and after["finished_at"] is not None and not after["cancel_requested"]
    assert model_status(redis, job) == ModelStatus.canceled and counts(redis) == {canceled: 1}


def test_cancel_of_a_running_job_asks_its_worker_to_stop(redis):
    job = job_in(redis, running)
    assert lifecycle.cancel(redis, job) is Move.request_cancel
    after = store.get_job(redis, job["id"])
    assert after["status"] == running and after["cancel_requested"] is True and after["finished_at"] is None
    assert model_status(redis, job) == ModelStatus.pending and counts(redis) == {running: 1}
    assert store.record_epoch(redis, job["id"], LEASE, 1, {"loss": 0.5})  # what the worker reads after an epoch
    assert lifecycle.cancel(redis, job) is Move.request_cancel  # asking twice is harmless


def test_cancel_of_a_canceled_job_leaves_it_as_it_is(redis):
    job = job_in(redis, canceled)
    before = snapshot(redis, job)
    assert lifecycle.cancel(redis, job) is None
    assert snapshot(redis, job) == before


@pytest.mark.parametrize("source", [queued, running])
def test_honour_cancel_ends_the_job_and_its_model_canceled(redis, source):
    job = job_in(redis, source)
    assert lifecycle.honour_cancel(redis, job)
    after = store.get_job(redis, job["id"])
    assert after["status"] == canceled and after["error"] is None and after["finished_at"] is not None
    assert model_status(redis, job) == ModelStatus.canceled and counts(redis) == {canceled: 1}
    assert not has_checkpoint(redis, job)


@pytest.mark.parametrize("source", [queued, running])
def test_fail_ends_the_job_and_its_model_failed_with_the_error(redis, source):
    job = job_in(redis, source)
    error = {"type": "WorkerLost", "detail": "gone"}
    assert lifecycle.fail(redis, job, error)
    after = store.get_job(redis, job["id"])
    assert after["status"] == failed and after["error"] == error and after["finished_at"] is not None
    assert model_status(redis, job) == ModelStatus.failed and counts(redis) == {failed: 1}
    assert not has_checkpoint(redis, job)


def test_succeed_stores_the_model_and_makes_it_ready(redis):
    job = job_in(redis, running)
    store.transition(redis, job, [store.Step([running], running, {"error": ERROR})])  # a retry's note
    epochs = [{"loss": 1.0}, {"loss": 0.5}]
    assert lifecycle.succeed(redis, job, LEASE, b"weights", {"metrics": {"loss": 0.5}}, epochs)
    after = store.get_job(redis, job["id"])
    assert after["status"] == succeeded and after["epoch"] == 2 and after["error"] is None
    assert after["finished_at"] is not None and store.history(redis, job["id"]) == {"loss": [1.0, 0.5]}
    model = store.get_model(redis, job["model_id"], store.PUBLIC)
    assert model["status"] == ModelStatus.ready and model["metrics"] == {"loss": 0.5}
    assert store.load_weights(redis, job["model_id"]) == b"weights"
    assert counts(redis) == {succeeded: 1} and not has_checkpoint(redis, job)


def test_a_cancel_that_keeps_weights_ends_the_job_canceled_with_its_model_ready(redis):
    job = job_in(redis, running)
    assert lifecycle.cancel(redis, job, keep="best") is Move.request_cancel
    assert store.get_job(redis, job["id"])["cancel_keep"] == "best"
    kept = {"partial": True, "kept": "best", "kept_epoch": 1, "stopped_epoch": 2}
    assert lifecycle.cancel_keeping(redis, job, LEASE, b"weights", kept, [{"loss": 1.0}, {"loss": 2.0}])
    after = store.get_job(redis, job["id"])
    assert after["status"] == canceled and after["epoch"] == 2 and after["finished_at"] is not None
    model = store.get_model(redis, job["model_id"], store.PUBLIC)
    assert model["status"] == ModelStatus.ready and model["kept"] == "best" and model["partial"] is True
    assert store.load_weights(redis, job["model_id"]) == b"weights"
    assert counts(redis) == {canceled: 1} and not has_checkpoint(redis, job)


def test_prune_ends_a_running_trial_where_it_stopped_and_drops_its_checkpoint(redis):
    job = job_in(redis, running)
    assert lifecycle.prune(redis, job, LEASE, epoch=3, rung=1)
    after = store.get_job(redis, job["id"])
    assert after["status"] == pruned and after["pruned"] == {"epoch": 3, "rung": 1} and after["finished_at"]
    assert model_status(redis, job) == ModelStatus.canceled and counts(redis) == {pruned: 1}
    assert not has_checkpoint(redis, job)


# Refused moves ---------------------------------------------------------------------------------

VERBS = {
    Move.start: lambda r, job: lifecycle.start(r, job, "lease-of-the-next-attempt")[0],
    Move.requeue: lambda r, job: lifecycle.requeue(r, job, ERROR),
    Move.honour_cancel: lifecycle.honour_cancel,
    Move.fail: lambda r, job: lifecycle.fail(r, job, ERROR),
    Move.succeed: lambda r, job: lifecycle.succeed(r, job, LEASE, b"weights", TRAINED, []),
    Move.cancel_keeping: lambda r, job: lifecycle.cancel_keeping(r, job, LEASE, b"weights", TRAINED, []),
    Move.prune: lambda r, job: lifecycle.prune(r, job, LEASE, 1, 0),
}
REFUSED = [(move, status) for move in VERBS for status in JobStatus if status not in ALLOWED[move]]


@pytest.mark.parametrize(("move", "status"), REFUSED, ids=[f"{m.name}-from-{s}" for m, s in REFUSED])
def test_a_move_from_a_status_its_row_does_not_allow_changes_nothing(redis, move, status):
    job = job_in(redis, status)  # held by LEASE, so only the status refuses the move
    before = snapshot(redis, job)
    assert VERBS[move](redis, job) is False
    assert snapshot(redis, job) == before


@pytest.mark.parametrize("status", [succeeded, failed])
def test_cancel_of_a_job_that_finished_otherwise_is_refused_naming_its_status(redis, status):
    job = job_in(redis, status)
    before = snapshot(redis, job)
    with pytest.raises(lifecycle.Refused) as refused:
        lifecycle.cancel(redis, job)
    assert refused.value.status == status
    assert snapshot(redis, job) == before


@pytest.mark.parametrize(
    "verb",
    [
        lambda r, job: lifecycle.requeue(r, job, ERROR, lease="someone-else"),
        lambda r, job: lifecycle.honour_cancel(r, job, lease="someone-else"),
        lambda r, job: lifecycle.succeed(r, job, "someone-else", b"weights", TRAINED, []),
        lambda r, job: lifecycle.cancel_keeping(r, job, "someone-else", b"weights", TRAINED, []),
        lambda r, job: lifecycle.prune(r, job, "someone-else", 1, 0),
    ],
    ids=["requeue", "honour_cancel", "succeed", "cancel_keeping", "prune"],
)
def test_an_attempt_that_lost_its_lease_cannot_move_the_job(redis, verb):
    job = job_in(redis, running)
    before = snapshot(redis, job)
    assert verb(redis, job) is False
    assert snapshot(redis, job) == before


def test_no_move_applies_to_a_job_that_does_not_exist(redis):
    nothing = {"id": "job_nope", "model_id": "mdl_nope", "attempts": 0}
    assert all(verb(redis, nothing) is False for verb in VERBS.values())
    with pytest.raises(lifecycle.Refused) as refused:
        lifecycle.cancel(redis, nothing)
    assert refused.value.status is None
    assert not redis.exists(store.job_key("job_nope"))


# The status words ------------------------------------------------------------------------------

STATUS_LITERAL = re.compile(r"[\"'](queued|running|succeeded|failed|canceled|pending|ready)[\"']")
CLIENT = ROOT / "nnserve" / "client.py"
"""The Python client speaks the API without importing the server: it keeps its own list, pinned below,
as the dashboard's script does."""


def test_status_words_are_spelled_only_in_the_lifecycle_module():
    spelled = {
        str(path.relative_to(ROOT))
        for package in ("engine", "service", "worker")
        for path in (ROOT / package).rglob("*.py")
        if STATUS_LITERAL.search(path.read_text())
    }
    assert spelled == {"service/lifecycle.py"}


def test_the_clients_lists_of_statuses_are_the_lifecycles():
    assert set(api_client.FINISHED) == FINISHED
    assert set(STATUS_LITERAL.findall(CLIENT.read_text())) <= set(JobStatus)
    script = (ROOT / "service" / "static" / "app.js").read_text()
    finished = re.search(r"const FINISHED = (\[[^\]]*\]);", script)
    assert finished is not None and set(json.loads(finished.group(1))) == FINISHED
    compared = re.findall(r"\.status [!=]== \"(\w+)\"", script)
    assert compared and set(compared) <= set(JobStatus) | set(ModelStatus)
