"""The model and training specs as pydantic models, derived from the engine's declarations.

Every engine class declares its parameters once (``engine/params.py``); here each
declaration becomes a pydantic field (its constraint's JSON Schema, its default, its
meaning as the description) and each class a model (``DenseLayer``, ``AdamOptimizer``,
``EarlyStopping``...), so the OpenAPI document describes exactly what the engine accepts
and a new layer or option appears in it without an edit here.

The models describe; they do not validate. The request's ``model`` and ``training`` reach
the engine as the client wrote them (``SkipValidation`` in ``schemas.py``), and the engine's
own checks report a mistake with one message and one location, whether it came over HTTP or
through ``engine.build``. Training fields the server does not offer are left out of the
schema here and refused in ``specs.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from nnserve.engine import Model, TrainingConfig, params

NOT_SERVED = {"gradient": "finite differences cost two forward passes per weight; train with the engine directly"}
"""Training fields the API refuses, with the reason it gives."""

SERVICE_TRAINING_FIELDS: dict[str, Any] = {
    # The engine's fit takes validation rows; the API, a dataset to read them from (``specs.check_validation_data``).
    "validation_data": (
        Union[str, None],  # noqa: UP007 (as the derived fields are written)
        Field(
            None,
            description="id of a dataset with the same features whose rows validate the model instead of a "
            "validation_split (Keras's fit(validation_data=...)); for classification, only classes the model knows",
        ),
    ),
}
"""Training fields of the API that are not the engine's: the service resolves them before the engine sees the rest."""

_FORBID = ConfigDict(extra="forbid")


def _title(cls: type[params.Configurable], registry: params.Registry[Any]) -> str:
    """``DenseLayer``, ``ReLUActivation``, ``SGDOptimizer``: the class name and its kind."""
    kind = registry.kind.capitalize()
    return cls.__name__ if cls.__name__.endswith(kind) else f"{cls.__name__}{kind}"


def _union_name(registry: params.Registry[Any]) -> str:
    return f"{registry.kind.capitalize()}Spec"


class _Derivation:
    """Builds the models, each once; a registry's union is named and resolved at the end, so a
    layer may hold layer specs (a wrapper layer) without the derivation going round in circles."""

    def __init__(self) -> None:
        self.models: dict[str, type[BaseModel]] = {}
        self.unions: dict[str, Any] = {}
        self.pending: list[params.Registry[Any]] = []

    def annotation(self, constraint: params.Constraint[Any]) -> Any:
        if isinstance(constraint, params.Optional):
            return Union[self.annotation(constraint.inner), None]  # noqa: UP007 (an annotation built at run time)
        if isinstance(constraint, params.ListOf):
            limits = Field(min_length=constraint.min_length) if constraint.min_length else Field()
            return Annotated[list[self.annotation(constraint.item)], limits]  # type: ignore[misc]
        if isinstance(constraint, params.MapOf):
            return dict[str, self.annotation(constraint.value)]  # type: ignore[misc]
        if isinstance(constraint, params.AnyOf):
            return Union[tuple(self.annotation(option) for option in constraint.options)]  # noqa: UP007
        if isinstance(constraint, params.Component):
            registry = constraint.registry
            if _union_name(registry) not in self.unions and registry not in self.pending:
                self.pending.append(registry)
            return _union_name(registry)  # resolved by name once every model exists
        if isinstance(constraint, params.Nested):
            model = self.model(constraint.cls, constraint.cls.__name__)
            shorthands = [key for key in constraint.shorthands if isinstance(key, str)]
            return Union[Literal[tuple(shorthands)], model] if shorthands else model  # noqa: UP007
        # Anything else is a single JSON value the engine describes itself.
        return Annotated[Any, WithJsonSchema(constraint.json_schema())]

    def fields(self, cls: type[params.Configurable], leave_out: Any = ()) -> dict[str, Any]:
        fields = {}
        for name, param in cls.hyperparameters.items():
            if name in leave_out:
                continue
            default = ... if param.required else param.default
            fields[name] = (self.annotation(param.constraint), Field(default, description=param.doc or None))
        return fields

    def model(
        self, cls: type[params.Configurable], title: str, doc: str | None = None, tag: dict[str, Any] | None = None
    ) -> type[BaseModel]:
        """The model of ``cls``'s parameters, with ``tag`` (``{"name": (Literal["adam"], ...)}``) first."""
        if title not in self.models:
            doc = doc or (cls.__doc__ or "").strip().split("\n\n")[0] or None
            fields = {**(tag or {}), **self.fields(cls)}
            self.models[title] = create_model(title, __config__=_FORBID, __doc__=doc, **fields)
        return self.models[title]

    def union(self, registry: params.Registry[Any]) -> Any:
        models = [
            self.model(cls, _title(cls, registry), tag={registry.key: (Literal[name], ...)})
            for name, cls in registry.items()
        ]
        # Annotations built at run time from the registries: for pydantic, not for a type checker.
        tagged: Any = Annotated[Union[tuple(models)], Field(discriminator=registry.key)]  # noqa: UP007
        if registry.bare:
            return Union[Literal[tuple(registry)], tagged]  # noqa: UP007
        return tagged

    def finish(self) -> None:
        """Build every registry's union (which may ask for more), then resolve the names everywhere."""
        while self.pending:
            registry = self.pending.pop()
            self.unions[_union_name(registry)] = self.union(registry)
        for model in self.models.values():
            model.model_rebuild(force=True, _types_namespace=self.unions)


_derivation = _Derivation()
ModelSpec = _derivation.model(
    Model, "ModelSpec", "The network: its layers, input to output, and how it meets the data."
)
TrainingSpec: type[BaseModel] = create_model(
    "TrainingSpec",
    __config__=_FORBID,
    __doc__="How to train (Keras's defaults): `loss` left out is chosen from the task and the output layer, "
    "`metrics` default to accuracy (classification) or mae (regression), `seed` is drawn and kept.",
    **_derivation.fields(TrainingConfig, leave_out=NOT_SERVED),
    **SERVICE_TRAINING_FIELDS,
)
_derivation.models["TrainingSpec"] = TrainingSpec
_derivation.finish()
