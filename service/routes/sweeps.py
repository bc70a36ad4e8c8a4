"""/v1/sweeps: submit a hyper-parameter sweep, follow it, cancel it (``service.sweeps`` does the work)."""

from __future__ import annotations

from flask import Blueprint, Response

from .. import store, sweeps
from ..context import services, tenant
from ..errors import Conflict, Invalid, NotFound
from ..idempotency import IDEMPOTENCY_HEADER, idempotent, remember
from ..openapi import doc
from ..parsing import page, parse
from ..schemas import SweepCreate, SweepList, SweepPublic
from . import listing, respond

bp = Blueprint("sweeps", __name__)


def get_sweep(sweep_id: str) -> dict:
    """The sweep record if this tenant owns it; raises NotFound."""
    sweep = store.get_sweep(services().redis, sweep_id, tenant())
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id!r}")
    return sweep


def public(sweep: dict, with_trials: bool = True) -> SweepPublic:
    shown = sweeps.summary(services().redis, sweep)
    if not with_trials:
        shown["trials"] = None
    return SweepPublic.model_validate(shown)


@bp.post("/v1/sweeps")
@doc(body=SweepCreate, responses={202: SweepPublic}, errors=(400, 409, 413, 415, 422, 429), headers=IDEMPOTENCY_HEADER)
@idempotent
def create():
    """Submit a sweep: every path and distribution checked now, its first trials queued."""
    body = parse(SweepCreate)
    ctx = services()
    dataset = store.get_dataset(ctx.redis, body.dataset, tenant())
    if dataset is None:
        raise Invalid("dataset", f"no dataset {body.dataset!r}")
    sweep = sweeps.plan(body, dataset, ctx.settings, tenant())
    sweeps.create_study(ctx.redis, sweep)  # its journal only: nothing runs before the record exists
    response = respond(public(sweep, with_trials=False), 202, {"Location": f"/v1/sweeps/{sweep['id']}"})
    store.create_sweep(ctx.redis, sweep, also=remember(response))
    sweeps.advance(ctx.redis, ctx.settings, sweep["id"])
    return response


@bp.get("/v1/sweeps")
@doc(
    responses={200: SweepList}, errors=(422,), query={"offset": "Skip this many", "limit": "At most this many (1-1000)"}
)
def index():
    """List your sweeps, newest first (without their trials)."""
    offset, limit = page()
    r = services().redis
    items = [public(sweep, with_trials=False) for sweep in store.list_sweeps(r, tenant(), offset, limit)]
    return listing(SweepList, items, store.count(r, tenant(), store.SWEEPS), offset, limit)


@bp.get("/v1/sweeps/<sweep_id>")
@doc(responses={200: SweepPublic}, errors=(404,))
def show(sweep_id: str):
    """Show a sweep: status, trial counts, the best so far and every trial."""
    ctx = services()
    sweep = get_sweep(sweep_id)
    if sweeps.stalled(ctx.redis, sweep):  # a crash came between two trials: carry on
        sweeps.advance(ctx.redis, ctx.settings, sweep_id)
        sweep = get_sweep(sweep_id)
    return respond(public(sweep))


@bp.get("/v1/sweeps/<sweep_id>/events")
@doc(
    responses={
        200: "text/event-stream; a `trial` event whenever a trial starts, reports an epoch, is pruned or ends "
        "(its row), a `best` event when the best so far changes, then a `status` event"
    },
    errors=(404, 503),
)
def events(sweep_id: str):
    """Follow a sweep live (Server-Sent Events): its trials as they run, the best so far, its end."""
    ctx = services()
    get_sweep(sweep_id)
    owner = tenant()

    def read() -> dict | None:
        sweep = store.get_sweep(ctx.redis, sweep_id, owner)
        return None if sweep is None else sweeps.summary(ctx.redis, sweep)

    stream = ctx.streams.open_sweep(ctx.redis, sweep_id, read)
    return Response(
        stream, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@bp.post("/v1/sweeps/<sweep_id>/cancel")
@doc(responses={202: SweepPublic}, errors=(404, 409))
def cancel(sweep_id: str):
    """Cancel a sweep: queued trials never start, running ones stop within an epoch, finished ones stay."""
    ctx = services()
    sweep = get_sweep(sweep_id)
    if not sweeps.cancel(ctx.redis, sweep):
        raise Conflict(f"sweep {sweep_id!r} has already {sweep['status']}")
    return respond(public(get_sweep(sweep_id)), 202)
