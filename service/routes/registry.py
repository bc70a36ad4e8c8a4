"""/v1/registry: registered model names, their versions and aliases (``service.registry``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import registry, store
from ..context import services, tenant
from ..errors import Conflict, Invalid, NotFound
from ..openapi import doc
from ..parsing import page, parse
from ..routing import agreement
from ..schemas import Aliases, AliasSet, RegistryDetail, RegistryItem, RegistryList
from . import listing, respond

bp = Blueprint("registry", __name__)

SUMMARY = ("on", "rows", "accuracy", "log_loss", "roc_auc", "mae", "rmse", "r2")
"""The figures of an evaluation report shown per version (the whole report is on the model)."""


def _state(name: str) -> store.RegistryState:
    state = store.registry_state(services().redis, tenant(), name)
    if state.record is None:
        raise NotFound(f"no registered model {name!r}")
    return state


def _item(name: str, state: store.RegistryState) -> dict[str, Any]:
    record = state.record or {}
    return {
        "name": name,
        "versions": len(state.versions),
        "aliases": registry.alias_map(state),
        "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"),
    }


@bp.get("/v1/registry")
@doc(
    responses={200: RegistryList},
    errors=(422,),
    query={"offset": "Skip this many", "limit": "At most this many (1-1000)"},
)
def index():
    """List your registered model names with their aliases, most recently changed first."""
    offset, limit = page()
    r = services().redis
    names = store.list_registry(r, tenant(), offset, limit)
    states = store.registry_states(r, tenant(), names)
    items = [RegistryItem.model_validate(_item(name, state)) for name, state in zip(names, states)]
    return listing(RegistryList, items, store.count(r, tenant(), store.REGISTRY), offset, limit)


@bp.get("/v1/registry/<name>")
@doc(responses={200: RegistryDetail}, errors=(404,))
def show(name: str):
    """Show a registered name: every version, the aliases, the alias moves, the shadow's agreement."""
    r = services().redis
    state = _state(name)
    models = store.models_by_id(r, state.versions.values())
    versions = []
    for version, model_id in sorted(state.versions.items(), reverse=True):
        model = models.get(model_id)
        if model is None:
            continue
        report = model.get("evaluation")
        versions.append(
            {
                "version": version,
                "model_id": model_id,
                "status": model["status"],
                "metrics": model.get("metrics") or {},
                "evaluation": {k: report[k] for k in SUMMARY if k in report} if isinstance(report, dict) else None,
                "promotion": model.get("promotion"),
                "job_id": model["job_id"],
                "dataset_id": model["dataset_id"],
                "source": model.get("source"),
                "created_at": model["created_at"],
                "trained_at": model.get("trained_at"),
            }
        )
    body = {
        **_item(name, state),
        "versions": versions,
        "events": store.alias_events(r, tenant(), name),
        "shadow": agreement(store.shadow_comparisons(r, tenant(), name)),
    }
    RegistryDetail.model_validate(body)  # the documented shape, kept true
    return respond(body)


def _alias(alias: str) -> str:
    problem = registry.name_problem(alias)
    if problem is not None:
        raise Invalid("alias", problem)
    if alias in registry.DERIVED:
        raise Conflict(f"{alias!r} is derived (always the highest version) and cannot be set or deleted")
    return alias


def _target(body: AliasSet) -> Any:
    """The stored form of an alias target (see ``service.registry``). Raises Invalid."""
    if body.split is not None:
        if body.version is not None or body.shadow is not None or body.sample is not None:
            raise Invalid("split", "a split stands alone: no version, shadow or sample with it")
        if not body.split:
            raise Invalid("split", "needs at least one version")
        for key in body.split:
            if not (key.isascii() and key.isdigit() and int(key) >= 1 and len(key) < 10):
                raise Invalid(f"split.{key}", f"keys are version numbers; received {key!r}")
        return {"split": {str(int(k)): w for k, w in body.split.items()}}
    if body.version is None:
        raise Invalid("version", 'field required: send {"version": N}, {"split": {...}} or {"version": N, "shadow": M}')
    if body.shadow is None:
        if body.sample is not None:
            raise Invalid("sample", "only with a shadow")
        return body.version
    if body.shadow == body.version:
        raise Invalid("shadow", "must be another version than the one answering")
    return {"version": body.version, "shadow": body.shadow, "sample": body.sample or 1.0}


@bp.put("/v1/registry/<name>/aliases/<alias>")
@doc(body=AliasSet, responses={200: Aliases}, errors=(400, 404, 409, 415, 422))
def set_alias(name: str, alias: str):
    """Point an alias at a version, a split or a shadowed version. Moving `current` back is a rollback: it
    answers the very next request on every API process, and `previous` keeps where `current` was."""
    alias = _alias(alias)
    target = _target(parse(AliasSet))
    r = services().redis
    exists, missing = store.set_alias(r, tenant(), name, alias, target, registry.versions_of(target), "api")
    if not exists:
        raise NotFound(f"no registered model {name!r}")
    if missing is not None:
        raise NotFound(f"{name!r} has no version {missing}")
    services().references.drop(tenant(), name)  # this process at once; the others on the published message
    return respond(Aliases(name=name, aliases=registry.alias_map(_state(name))))


@bp.delete("/v1/registry/<name>/aliases/<alias>")
@doc(responses={204: None}, errors=(404, 409, 422))
def delete_alias(name: str, alias: str):
    """Remove an alias (a bare name then resolves to `latest` if it was `current`)."""
    alias = _alias(alias)
    outcome = store.delete_alias(services().redis, tenant(), name, alias, "api")
    if outcome == 0:
        raise NotFound(f"no registered model {name!r}")
    if outcome == 1:
        raise NotFound(f"{name!r} has no alias {alias!r}")
    services().references.drop(tenant(), name)
    return respond(None, 204)


@bp.delete("/v1/registry/<name>")
@doc(responses={204: None}, errors=(404,))
def delete(name: str):
    """Delete a registered name and every one of its versions' models."""
    if not store.delete_name(services().redis, tenant(), name):
        raise NotFound(f"no registered model {name!r}")
    services().references.drop(tenant(), name)
    return respond(None, 204)
