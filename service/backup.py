"""Backups: every dataset, job (with its history), model (with its weights), registered model name (with
its versions and aliases) and stored API key of one tenant or of all, in one zip archive of JSON and
``.npz`` files (no pickle), and their restore into any Redis, an empty one included.

The archive::

    nnserve-backup.json            the manifest: format, version, nnserve's version, when, which tenant
                                   (null: all), counts, and the record files in the order they are restored
    keys.json                      stored API keys: the SHA-256 of each and its record (no secret exists to save)
    <family>/<id>.json             one record: family, tenant, id, score (its place in its tenant's list),
                                   its hash and list parts as JSON, and the names of its blob files
                                   (``registry/<tenant>/<name>.json`` for a registered name)
    <family>/<id>.<part>.npz       its blobs: a dataset's arrays, a model's weights

What a record is made of comes from ``store.FAMILIES``, built on the store's own key functions, so a new
kind of record is one line there. The model registry is one: each registered name with its versions,
aliases, alias events and shadow comparisons, restored after the models. A version whose model is not in
the archive (registered while the backup was being written) is dropped on restore with the aliases
naming it, so no reference resolves to nothing. The ``.npz`` files are the very bytes the store keeps;
restore opens each with ``allow_pickle=False`` before writing anything, so an archive carrying a pickle
is refused whole.

A backup of a running service is consistent per record (each is read in one transaction), not across
records; stop the workers for a point-in-time copy. Restore writes each record in one transaction.
It refuses, writing nothing, when any record or key of the archive already exists, unless ``force``:
then those records are replaced (their old keys deleted, a replaced model dropped from every API
process's cache, the job counts kept true), and everything else in Redis is left as it is. A key
revoked in Redis stays revoked whatever the archive says. A job that was queued or running when the
backup was made is restored as ``failed`` (its model too), with the reason, since its queue entry and
checkpoint are not saved: restoring never starts training.
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import orjson
import redis

from nnserve import __version__
from nnserve.engine import archive as npz

from . import registry, store
from .lifecycle import ACTIVE, JobStatus, ModelStatus
from .settings import SCOPES

FORMAT = "nnserve-backup"
VERSION = 1
MANIFEST = "nnserve-backup.json"
KEYS = "keys.json"
RECORD_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""What a record id in an archive may be: ids become parts of key names (``store.TENANT`` likewise)."""
DIGEST = re.compile(r"[0-9a-f]{64}")
INTERRUPTED = {
    "type": "Interrupted",
    "detail": "the job was queued or running when the backup was made and was restored without its place "
    "in the queue: submit it again",
}
FAMILIES = {family.name: family for family in store.FAMILIES}


class ArchiveError(Exception):
    """The file is not an nnserve backup that can be restored; says what is wrong with it."""


class RestoreConflict(Exception):
    """Records of the archive already exist (and ``force`` was not given); nothing was written."""

    def __init__(self, existing: list[str]):
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        super().__init__(f"{len(existing)} records of the backup already exist ({shown})")
        self.existing = existing


def backup(r: redis.Redis, path: Path, tenant: str | None = None) -> dict[str, int]:
    """Write the records of ``tenant`` (None: of every tenant) to the archive ``path``; returns the counts.

    The archive is written beside ``path`` and renamed onto it when complete, readable by its owner only
    (it holds every dataset and model)."""
    tenants = [tenant] if tenant is not None else sorted(store.tenants(r))
    counts = dict.fromkeys(FAMILIES, 0)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with (
            os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file,
            zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive,
        ):
            entries = []
            for owner in tenants:
                for family in store.FAMILIES:
                    for record_id, score in store.indexed(r, owner, family):
                        parts = store.read_record(r, family, owner, record_id)
                        if parts is None:  # deleted since the index was read
                            continue
                        entries.append(_write_record(archive, family, owner, record_id, score, parts))
                        counts[family.name] += 1
            keys = [
                {"digest": digest, "record": record}
                for digest, record in sorted(store.api_keys(r).items())
                if tenant is None or record["tenant"] == tenant
            ]
            counts["keys"] = len(keys)
            archive.writestr(KEYS, orjson.dumps(keys, option=orjson.OPT_INDENT_2))
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "nnserve": __version__,
                "created_at": store.now(),
                "tenant": tenant,
                "counts": counts,
                "records": entries,
            }
            archive.writestr(MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return counts


def _write_record(
    archive: zipfile.ZipFile, family: store.Family, tenant: str, record_id: str, score: float, parts: dict[str, Any]
) -> str:
    name = f"{family.name}/{family.member(tenant, record_id)}"  # a registered name is unique per tenant only
    document: dict[str, Any] = {"family": family.name, "tenant": tenant, "id": record_id, "score": score}
    document["parts"] = {part.name: parts[part.name] for part in family.parts if part.kind != "npz"}
    document["blobs"] = {}
    for part in family.parts:
        if part.kind == "npz" and part.name in parts:
            document["blobs"][part.name] = f"{name}.{part.name}.npz"
            archive.writestr(document["blobs"][part.name], parts[part.name])
    archive.writestr(f"{name}.json", orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return f"{name}.json"


def restore(r: redis.Redis, path: Path, force: bool = False) -> dict[str, int]:
    """Write the archive's records and keys into Redis; returns the counts. Raises ArchiveError for a file
    that is no restorable backup and RestoreConflict (without ``force``) when any of its records exists;
    either way before anything is written."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"{path} is not a zip archive: {error}") from None
    with archive:
        manifest = _read_json(archive, MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArchiveError(f"{path} is not an nnserve backup (no {MANIFEST} of format {FORMAT!r})")
        if manifest.get("version") != VERSION:
            raise ArchiveError(
                f"{path} is a backup of format version {manifest.get('version')!r}; this nnserve reads {VERSION}"
            )
        documents = [_checked_record(archive, name) for name in _list(manifest.get("records"), "records")]
        keys = [_checked_key(entry) for entry in _list(_read_json(archive, KEYS), KEYS)]

        stored_keys = store.api_keys(r)
        existing = [
            f"{d['family']}/{d['id']}"
            for d in documents
            if store.record_exists(r, FAMILIES[d["family"]], d["tenant"], d["id"])
        ]
        existing += [f"keys/{entry['record']['id']}" for entry in keys if entry["digest"] in stored_keys]
        if existing and not force:
            raise RestoreConflict(existing)

        counts = dict.fromkeys(FAMILIES, 0)
        models = {d["id"] for d in documents if d["family"] == store.MODELS}
        for document in documents:
            family = FAMILIES[document["family"]]
            parts = dict(document["parts"])
            parts.update({part: archive.read(name) for part, name in document["blobs"].items()})
            _settle(family, parts[family.parts[0].name])
            if family.name == store.REGISTRY:
                _drop_versions_without_models(parts, models)
            store.restore_record(r, family, document["tenant"], document["id"], parts, document["score"])
            counts[family.name] += 1
        for entry in keys:
            record = entry["record"]
            revoked = stored_keys.get(entry["digest"], {}).get("revoked_at")
            if revoked is not None:  # restoring must never bring a revoked key back
                record = {**record, "revoked_at": revoked}
            store.save_api_key(r, entry["digest"], record)
        counts["keys"] = len(keys)
    return counts


def _settle(family: store.Family, record: dict[str, Any]) -> None:
    """A job (and its model) caught in flight is restored as failed: its queue entry and checkpoint are not saved."""
    if family.name == store.JOBS and record.get("status") in ACTIVE:
        record.update(status=JobStatus.failed, finished_at=store.now(), error=INTERRUPTED)
        record.pop("lease", None)
    if family.name == store.MODELS and record.get("status") == ModelStatus.pending:
        record["status"] = ModelStatus.failed


def _drop_versions_without_models(parts: dict[str, Any], models: set[str]) -> None:
    """Drop from a registered name the versions whose model is not in the archive, and the stored aliases
    naming them (each drop kept as an alias event, as a forced version delete does), so no reference
    resolves to a model that is not there. A backup of a running service can hold such a version: a job
    that finished while the backup was being written registered it after the models were read."""
    versions: dict[str, str] = parts["versions"]
    gone = {int(version) for version, model_id in versions.items() if model_id not in models}
    if not gone:
        return
    parts["versions"] = {version: model_id for version, model_id in versions.items() if int(version) not in gone}
    at = store.now()
    aliases, events = dict(parts.get("aliases", {})), list(parts.get("events", []))
    for alias, target in sorted(aliases.items()):
        if gone & set(registry.versions_of(target)):
            del aliases[alias]
            events.insert(0, {"at": at, "alias": alias, "from": target, "to": None, "by": "restore: no model"})
    parts["aliases"], parts["events"] = aliases, events[: store.ALIAS_EVENTS_KEPT]


def _read_json(archive: zipfile.ZipFile, name: str) -> Any:
    try:
        return orjson.loads(archive.read(name))
    except KeyError:
        raise ArchiveError(f"the archive has no {name}") from None
    except orjson.JSONDecodeError as error:
        raise ArchiveError(f"{name} is not JSON: {error}") from None


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ArchiveError(f"{where} must be a list")
    return value


def _checked_record(archive: zipfile.ZipFile, name: str) -> dict[str, Any]:
    """The record file ``name``, checked to be one the store could have written (its blobs opened as npz
    without pickle); raises ArchiveError naming what is wrong."""
    document = _read_json(archive, str(name))
    family = FAMILIES.get(str(document.get("family"))) if isinstance(document, dict) else None
    if family is None:
        raise ArchiveError(f"{name}: 'family' must be one of {', '.join(FAMILIES)}")
    record_id, tenant = document.get("id"), document.get("tenant")
    if not isinstance(record_id, str) or not RECORD_ID.fullmatch(record_id):
        raise ArchiveError(f"{name}: 'id' must be letters, digits, '_', '.' or '-'")
    if not isinstance(tenant, str) or not store.TENANT.fullmatch(tenant):
        raise ArchiveError(f"{name}: 'tenant' must be letters, digits, '_', '.' or '-'")
    if not isinstance(document.get("score"), (int, float)):
        raise ArchiveError(f"{name}: 'score' must be a number")
    parts, blobs = document.get("parts"), document.get("blobs")
    kinds = {part.name: part.kind for part in family.parts}
    if not isinstance(parts, dict) or not isinstance(blobs, dict):
        raise ArchiveError(f"{name}: 'parts' and 'blobs' must be objects")
    for part, value in parts.items():
        if kinds.get(part) not in ("hash", "strings", "list") or not isinstance(
            value, list if kinds[part] == "list" else dict
        ):
            raise ArchiveError(f"{name}: {part!r} is not a hash or list part of {family.name}")
        if isinstance(value, dict) and kinds[part] == "strings" and not all(isinstance(v, str) for v in value.values()):
            raise ArchiveError(f"{name}: {part!r} must map names to strings")
    record = parts.get(family.parts[0].name)
    if not isinstance(record, dict):
        raise ArchiveError(f"{name}: its {family.parts[0].name!r} must be an object")
    if not family.scoped and (record.get("id") != record_id or record.get("tenant") != tenant):
        raise ArchiveError(f"{name}: its {family.parts[0].name!r} must hold the same id and tenant")
    if family.name == store.REGISTRY:
        _check_registered_name(name, record_id, parts)
    for part, blob in blobs.items():
        if kinds.get(part) != "npz":
            raise ArchiveError(f"{name}: {part!r} is not a blob part of {family.name}")
        try:
            npz.unpack(archive.read(blob), blob)[0]
        except KeyError:
            raise ArchiveError(f"{name}: the archive has no {blob}") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ArchiveError(
                f"{blob} is not an .npz of plain arrays (pickled objects are refused): {error}"
            ) from None
    return document


def _check_registered_name(name: str, registered: str, parts: dict[str, Any]) -> None:
    """A registered name's parts as the registry's scripts keep them: versions numbered from 1 up to
    ``next_version`` (the last number given, so the next registration takes a fresh one), each a model id;
    every stored alias a target (a version, split or shadow pair) naming only those versions."""
    problem = registry.name_problem(registered)
    if problem is not None:
        raise ArchiveError(f"{name}: 'id' {problem}")
    versions, aliases = parts.get("versions", {}), parts.get("aliases", {})
    if not all(v.isdecimal() and int(v) > 0 and RECORD_ID.fullmatch(m) for v, m in versions.items()):
        raise ArchiveError(f"{name}: 'versions' must map version numbers to model ids")
    next_version = parts["record"].get("next_version")
    if not isinstance(next_version, int) or any(int(v) > next_version for v in versions):
        raise ArchiveError(f"{name}: 'next_version' must be a number, at least the highest version")
    for alias, target in aliases.items():
        try:
            named = registry.versions_of(target)
            valid = registry.name_problem(alias) is None and all(isinstance(v, int) for v in named)
        except (TypeError, KeyError, ValueError, AttributeError):
            valid = False
        if not valid:
            raise ArchiveError(f"{name}: alias {alias!r} must be a version, a split or a shadow pair")
        if any(str(v) not in versions for v in named):
            raise ArchiveError(f"{name}: alias {alias!r} names a version that is not in 'versions'")


def _checked_key(entry: Any) -> dict[str, Any]:
    record = entry.get("record") if isinstance(entry, dict) else None
    if (
        not isinstance(record, dict)
        or not isinstance(entry.get("digest"), str)
        or not DIGEST.fullmatch(entry["digest"])
        or not isinstance(record.get("id"), str)
        or not isinstance(record.get("tenant"), str)
        or not store.TENANT.fullmatch(record["tenant"])
        or not isinstance(record.get("scopes"), list)
        or not set(record["scopes"]) <= set(SCOPES)
    ):
        raise ArchiveError(
            f"{KEYS}: each entry must be a SHA-256 'digest' and a 'record' with an id, tenant and scopes"
        )
    return entry
