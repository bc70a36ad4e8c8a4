"""/v1/jobs: submit a training job, follow it, cancel it."""

from __future__ import annotations

from flask import Blueprint, Response, request

from .. import lifecycle, queue, specs, store
from ..context import services, tenant
from ..errors import Conflict, Invalid, NotFound, TooManyRequests
from ..idempotency import IDEMPOTENCY_HEADER, idempotent, remember
from ..openapi import doc
from ..parsing import page, parse
from ..schemas import CancelRequest, JobCreate, JobList, JobPublic
from . import listing, models, respond

bp = Blueprint("jobs", __name__)


def get_job(job_id: str) -> dict:
    """The job record if this tenant owns it; raises NotFound."""
    job = store.get_job(services().redis, job_id, tenant())
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job


def initial_model(ref: str) -> dict:
    """The record of the model a warm start names (``initial_model``: any model reference, ``mdl_…``,
    ``NAME``, ``NAME@ALIAS``, ``NAME@N``); raises Invalid naming it. The one place a job's model reference
    is looked up."""
    try:
        return models.get_model(ref)
    except NotFound as error:
        raise Invalid("initial_model", error.detail) from None


def public(job: dict, with_history: bool = True) -> JobPublic:
    history = store.history(services().redis, job["id"]) if with_history else None
    return JobPublic.model_validate(
        {**job, "progress": {"epoch": job["epoch"], "epochs": job["epochs"]}, "history": history}
    )


@bp.post("/v1/jobs")
@doc(body=JobCreate, responses={202: JobPublic}, errors=(400, 409, 413, 415, 422, 429), headers=IDEMPOTENCY_HEADER)
@idempotent
def create():
    """Submit a training job: validated now, queued for a worker."""
    body = parse(JobCreate)
    ctx = services()
    dataset = store.get_dataset(ctx.redis, body.dataset, tenant())
    if dataset is None:
        raise Invalid("dataset", f"no dataset {body.dataset!r}")
    initial = initial_model(body.initial_model) if body.initial_model is not None else None
    job, model = specs.plan(
        body,
        dataset,
        ctx.settings,
        tenant(),
        lambda dataset_id: store.get_dataset(ctx.redis, dataset_id, tenant()),
        initial,
    )
    response = respond(public(job, with_history=False), 202, {"Location": f"/v1/jobs/{job['id']}"})
    try:
        lifecycle.submit(
            ctx.redis,
            job,
            model,
            lambda pipe: queue.enqueue_train(ctx.queue, job["id"], ctx.settings, pipe),
            also=remember(response),
            max_active=ctx.settings.max_active_jobs,
        )
    except store.ActiveJobLimit as limit:
        raise TooManyRequests(
            f"you have {limit.active} jobs queued or running; the limit is {limit.limit} at a time "
            "(NNSERVE_MAX_ACTIVE_JOBS): submit again when one has finished"
        ) from None
    return response


@bp.get("/v1/jobs")
@doc(responses={200: JobList}, errors=(422,), query={"offset": "Skip this many", "limit": "At most this many (1-1000)"})
def index():
    """List your jobs, newest first (without their history)."""
    offset, limit = page()
    r = services().redis
    items = [public(job, with_history=False) for job in store.list_jobs(r, tenant(), offset, limit)]
    return listing(JobList, items, store.count(r, tenant(), store.JOBS), offset, limit)


@bp.get("/v1/jobs/<job_id>")
@doc(responses={200: JobPublic}, errors=(404,))
def show(job_id: str):
    """Show a job: status, progress, per-epoch history, error."""
    return respond(public(get_job(job_id)))


@bp.post("/v1/jobs/<job_id>/cancel")
@doc(body=CancelRequest, body_required=False, responses={202: JobPublic}, errors=(400, 404, 409, 415, 422))
def cancel(job_id: str):
    """Cancel a job: a queued one never starts, a running one stops within an epoch, keeping the weights
    of its best or last epoch in a ready model when the body says `keep` (no body: keep nothing)."""
    ctx = services()
    body = parse(CancelRequest) if request.get_data() else CancelRequest()
    try:
        if lifecycle.cancel(ctx.redis, get_job(job_id), keep=body.keep) is lifecycle.Move.cancel:
            queue.discard(ctx.queue, job_id)  # it was queued: it never starts
    except lifecycle.Refused as refused:
        raise Conflict(f"job {job_id!r} has already {refused.status}") from None
    return respond(public(get_job(job_id)), 202)


@bp.delete("/v1/jobs/<job_id>")
@doc(responses={204: None}, errors=(404, 409))
def delete(job_id: str):
    """Delete a finished job: its record and history (its model stays)."""
    try:
        lifecycle.delete(services().redis, get_job(job_id))
    except lifecycle.Refused as refused:
        if refused.status is None:
            raise NotFound(f"no job {job_id!r}") from None
        raise Conflict(f"job {job_id!r} is still {refused.status}; cancel it first") from None
    return respond(None, 204)


@bp.get("/v1/jobs/<job_id>/events")
@doc(
    responses={200: "text/event-stream; an `epoch` event per epoch (id: the epoch number), then a `status` event"},
    errors=(404, 422),
    query={"last_event_id": "Resume after this epoch (as the Last-Event-ID header)"},
    headers={"Last-Event-ID": "Resume after this epoch: the id of the last event received"},
)
def events(job_id: str):
    """Follow a job live (Server-Sent Events): each epoch's loss and metrics, then its final status."""
    ctx = services()
    get_job(job_id)
    stream = ctx.streams.open(ctx.redis, job_id, last_event_id())
    return Response(
        stream, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )  # nginx: pass events on at once


def last_event_id() -> int:
    """The epoch to resume after: ``Last-Event-ID`` (sent by EventSource when it reconnects), else
    ``?last_event_id=``, else 0. Raises Invalid for anything but a whole number."""
    raw = request.headers.get("Last-Event-ID", request.args.get("last_event_id", "")).strip() or "0"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise Invalid("last_event_id", f"must be the id of an epoch event, a whole number; received {raw!r}")
    return int(raw)
