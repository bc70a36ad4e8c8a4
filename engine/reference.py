"""The reference tables of ``docs/spec.md`` and the dashboard's choices, read from the declarations.

Every table of parameters in the spec reference is generated here from the classes' own
declarations (``params.py``), between marker lines, so the document cannot drift from what
the engine accepts::

    python -m nnserve.engine.reference docs/spec.md           # rewrite the generated tables
    python -m nnserve.engine.reference --check docs/spec.md   # exit 1 when they are stale

The prose around the tables is written by hand.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import Any

from .activations import ACTIVATIONS
from .callbacks import EarlyStopping, ReduceLROnPlateau
from .initializers import INITIALIZERS
from .layers import LAYERS
from .losses import LOSSES
from .metrics import METRICS
from .model import Model
from .optimizers import OPTIMIZERS, SCHEDULES, Optimizer
from .params import Configurable, Param, Registry
from .training_config import TrainingConfig

REGISTRIES: tuple[Registry[Any], ...] = (LAYERS, ACTIVATIONS, INITIALIZERS, LOSSES, METRICS, OPTIMIZERS, SCHEDULES)

COMMAND = "python -m nnserve.engine.reference docs/spec.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z_]+)[^>]*-->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def choices() -> dict[str, dict[str, list[str]]]:
    """Every registry's names, each with its parameters' names: ``{"layers": {"dense": ["units", ...]},
    "activations": {"relu": [], "leaky_relu": ["alpha"]}, ...}`` (what a form can offer)."""
    return {
        registry.title.lower(): {name: list(cls.hyperparameters) for name, cls in registry.items()}
        for registry in REGISTRIES
    }


# Markdown ------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _default(param: Param[Any]) -> str:
    return "*required*" if param.required else _code(param.default)


def summary(cls: type) -> str:
    """The first paragraph of the class's docstring, in Markdown (``x`` becomes `x`)."""
    first = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in first.splitlines()).replace("``", "`")


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def parameters_table(cls: type[Configurable], leave_out: Iterable[str] = ()) -> str:
    """field | default | allowed | meaning, one row per declared parameter."""
    rows = [
        (f"`{name}`", _default(param), param.constraint.describe(), param.doc)
        for name, param in cls.hyperparameters.items()
        if name not in leave_out
    ]
    return _table(("field", "default", "allowed", "meaning"), rows)


def _inline(cls: type[Configurable], leave_out: Iterable[str] = ()) -> str:
    """``alpha`` = 0.2, ... : the parameters with their defaults, on one line."""
    return ", ".join(
        f"`{name}` = {_default(param).strip('`')}"
        for name, param in cls.hyperparameters.items()
        if name not in leave_out
    )


def _names_table(registry: Registry[Any], extra: tuple[str, Any] | None = None) -> str:
    """name | formula | parameters (with their defaults), one row per class of ``registry``."""
    header = ["name", "formula", "parameters"] + ([extra[0]] if extra else [])
    rows = []
    for name, cls in registry.items():
        row = [f"`{name}`", summary(cls), _inline(cls)]
        rows.append(row + ([extra[1](cls)] if extra else []))
    return _table(header, rows)


def _layers() -> str:
    parts = []
    for name, cls in LAYERS.items():
        parts.append(f"**`{name}`** — {summary(cls)}\n\n{parameters_table(cls)}")
    return "\n".join(parts)


def _callbacks() -> str:
    return "\n".join(
        f"**`{field}`** — {summary(cls)}\n\n{parameters_table(cls)}"
        for field, cls in (("early_stopping", EarlyStopping), ("reduce_lr_on_plateau", ReduceLROnPlateau))
    )


def _optimizers() -> str:
    common = set(Optimizer.hyperparameters)
    rows = [(f"`{name}`", summary(cls), _inline(cls, leave_out=common)) for name, cls in OPTIMIZERS.items()]
    return (
        _table(("name", "update", "hyperparameters (defaults)"), rows)
        + "\nEvery optimizer also takes:\n\n"
        + parameters_table(Optimizer)
    )


def tables() -> dict[str, str]:
    """Each generated block of docs/spec.md by name."""
    return {
        "model": parameters_table(Model),
        "layers": _layers(),
        "activations": _names_table(ACTIVATIONS),
        "initializers": _names_table(INITIALIZERS),
        "training": parameters_table(TrainingConfig),
        "callbacks": _callbacks(),
        "losses": _names_table(LOSSES, ("task", lambda cls: "classification" if cls.classification_only else "any")),
        "optimizers": _optimizers(),
        "schedules": _names_table(SCHEDULES),
        "metrics": _names_table(METRICS, ("task", lambda cls: cls.task)),
    }


def render(document: str) -> str:
    """``document`` with every generated block replaced by the current table; an unknown block name raises KeyError."""
    generated = tables()
    return BLOCK.sub(lambda m: m.group(1) + generated[m.group("name")] + m.group(4), document)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [arg for arg in argv if arg != "--check"]
    if len(paths) != 1:
        print(f"usage: {COMMAND} [--check]", file=sys.stderr)
        return 2
    with open(paths[0], encoding="utf-8") as file:
        document = file.read()
    updated = render(document)
    if check:
        if updated != document:
            print(f"{paths[0]} is stale: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if updated != document:
        with open(paths[0], "w", encoding="utf-8") as file:
            file.write(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
