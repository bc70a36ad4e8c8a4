"""Model references as the dialect routes take them: the one place a reference becomes a model id.

A reference is a model id (``mdl_…``) today. The model registry (``NAME``, ``NAME@ALIAS``,
``NAME@N``) replaces ``resolve`` when it lands; every route that takes a reference (TF Serving's
``{name}``, MLflow's ``{ref}``, ...) calls it and nothing else, so the registry changes them all.
"""

from __future__ import annotations

from .errors import NotFound


def resolve(reference: str, version: str | None = None, alias: str | None = None) -> str:
    """The id of the model ``reference`` names (at registry ``version`` or ``alias`` when given);
    raises NotFound. Tenancy and status are the caller's to check (``routes.models.trained``)."""
    if version is not None or alias is not None or "@" in reference:
        # Versions and aliases belong to the model registry, which is not built into this release.
        named = f"{reference}@{version if version is not None else alias}" if "@" not in reference else reference
        raise NotFound(f"no model {named!r}: versions and aliases need a registered model name")
    return reference
