"""The engine's exceptions.

Every bad spec raises :class:`SpecError`, whose ``loc`` names the offending field
(``("layers", 2, "activation")``) so a caller can point at it; ``str(error)`` reads
``layers[2].activation: unknown 'relu6'; expected one of ...``.
"""

from __future__ import annotations

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("layers", 2, "units")`` -> ``layers[2].units``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class SpecError(EngineError, ValueError):
    """A model or training spec, or the data given to it, is not acceptable."""

    def __init__(self, loc: Loc | str, message: str):
        self.loc: Loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.message = message
        super().__init__(f"{format_loc(self.loc)}: {message}" if self.loc else message)

    def within(self, *prefix: str | int) -> SpecError:
        """The same error, located under ``prefix`` (used as it travels up the spec)."""
        return SpecError(prefix + self.loc, self.message)


class NonFiniteError(EngineError, ArithmeticError):
    """Training produced NaN or infinite values (usually unscaled input or a high learning rate)."""
