"""The operator's verbs: ``nnserve keys create | list | revoke``, ``nnserve backup`` and ``nnserve restore``.

They talk to Redis directly (``REDIS_URL``), not to the API: they are for whoever runs the service,
on a machine (or in a container) that reaches its Redis. Exit codes: 0 done, 1 refused (an unknown
key, records that already exist, Redis unreachable), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import redis

from nnserve.service import auth, backup, store
from nnserve.service.settings import SCOPES, ApiKey, Settings, parse_scopes

ADMIN_VERBS = ("keys", "backup", "restore")


def add_admin_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = verbs.add_parser("keys", help="API keys stored in Redis: create, list, revoke (no restart needed)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; prints it once, on standard output")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        type=_scopes,
        help=f"what the key may do: {', '.join(SCOPES)} (repeat, or join with '+': --scope predict+read)",
    )
    create.add_argument(
        "--tenant",
        type=_tenant,
        help="whose records the key reaches: an existing tenant (t_…, 'public' for those made while the API "
        "was open; `nnserve keys list` shows them) or a new name; default: a new tenant of its own",
    )
    listing = actions.add_parser("list", help="the stored keys (and those of NNSERVE_API_KEYS here): never secrets")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    revoke = actions.add_parser("revoke", help="stop a stored key working, on every API process at once")
    revoke.add_argument("id", help="the key's id (key_…), as `nnserve keys list` shows it")

    save = verbs.add_parser("backup", help="every dataset, job, model, registered name and stored key, to one archive")
    save.add_argument("-o", "--output", required=True, type=Path, help="the archive to write (.zip)")
    save.add_argument("--tenant", type=_tenant, help="only this tenant's records and keys (default: all)")
    load = verbs.add_parser("restore", help="write a backup's records and keys into Redis")
    load.add_argument("archive", type=Path, help="an archive written by nnserve backup")
    load.add_argument(
        "--force",
        action="store_true",
        help="replace records and keys that already exist (without it nothing is written when any does)",
    )


def _scopes(text: str) -> frozenset[str]:
    try:
        return parse_scopes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _tenant(text: str) -> str:
    if not store.TENANT.fullmatch(text):
        raise argparse.ArgumentTypeError("a tenant is 1 to 64 letters, digits, '_', '.' or '-'")
    return text


def run_admin_verb(settings: Settings, args: argparse.Namespace) -> int:
    name = f"{args.verb} {args.action}" if args.verb == "keys" else args.verb
    r = store.connect(settings)
    try:
        if args.verb == "keys":
            return {"create": cmd_create, "list": cmd_list, "revoke": cmd_revoke}[args.action](r, settings, args)
        return {"backup": cmd_backup, "restore": cmd_restore}[args.verb](r, settings, args)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        print(f"nnserve {name}: cannot reach Redis (REDIS_URL): {error}", file=sys.stderr)
        return 1
    finally:
        r.close()


def cmd_create(r: redis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    scopes = frozenset().union(*args.scope)
    secret, record = auth.create_key(r, scopes, args.tenant)
    note = ""
    if args.tenant is not None and not store.has_records(r, args.tenant):
        note = " (a tenant with no records yet: check the name if you meant an existing one)"
    print(
        f"created {record['id']} for tenant {record['tenant']}{note} with scope {'+'.join(record['scopes'])}; "
        "the key follows, shown this once:",
        file=sys.stderr,
    )
    print(secret, flush=True)
    return 0


def cmd_list(r: redis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    rows = sorted(store.api_keys(r).values(), key=lambda record: record["created_at"])
    configured = [
        {
            "id": f"env:{i}",
            "tenant": auth.tenant_of(auth.digest(key.get_secret_value())),
            "scopes": [s for s in SCOPES if s in (key.scopes if isinstance(key, ApiKey) else SCOPES)],
            "created_at": None,
            "revoked_at": None,
            "source": "NNSERVE_API_KEYS",
        }
        for i, key in enumerate(settings.api_keys, start=1)
    ]
    rows = [{**record, "source": "redis"} for record in rows] + configured
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [["ID", "TENANT", "SCOPES", "CREATED", "REVOKED", "SOURCE"]]
    table += [
        [
            row["id"],
            row["tenant"],
            "+".join(row["scopes"]),
            (row["created_at"] or "")[:19],
            (row["revoked_at"] or "")[:19],
            row["source"],
        ]
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*table)]
    print("\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table))
    return 0


def cmd_revoke(r: redis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    if args.id.startswith("env:"):
        print(
            f"nnserve keys revoke: {args.id} is set in NNSERVE_API_KEYS: take it out of that variable and restart "
            "the API (or first move its clients to a stored key: nnserve keys create --tenant <its tenant>)",
            file=sys.stderr,
        )
        return 1
    record = store.revoke_api_key(r, args.id)
    if record is None:
        print(f"nnserve keys revoke: no stored key {args.id!r} (nnserve keys list shows them)", file=sys.stderr)
        return 1
    print(f"revoked {record['id']} (tenant {record['tenant']}) at {record['revoked_at']}", file=sys.stderr)
    return 0


def cmd_backup(r: redis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    try:
        counts = backup.backup(r, args.output, args.tenant)
    except OSError as error:
        print(f"nnserve backup: cannot write {args.output}: {error}", file=sys.stderr)
        return 1
    whose = f"tenant {args.tenant}" if args.tenant else "all tenants"
    print(f"backed up {_counted(counts)} of {whose} to {args.output}", file=sys.stderr)
    return 0


def cmd_restore(r: redis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    try:
        counts = backup.restore(r, args.archive, force=args.force)
    except backup.ArchiveError as error:
        print(f"nnserve restore: {error}; nothing was restored", file=sys.stderr)
        return 1
    except backup.RestoreConflict as conflict:
        print(
            f"nnserve restore: {conflict}; nothing was restored. --force replaces them (and leaves everything "
            "else in Redis as it is)",
            file=sys.stderr,
        )
        return 1
    print(f"restored {_counted(counts)} from {args.archive}", file=sys.stderr)
    return 0


COUNTED = {store.REGISTRY: "registered names"}
"""How a count whose family name is no plural noun reads."""


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {COUNTED.get(name, name)}" for name, n in counts.items())
