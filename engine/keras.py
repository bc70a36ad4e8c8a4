"""Keras 3 ``Sequential.to_json()`` documents as nnserve specs (no Keras import: the document is plain JSON).

The mapping is read from the declarations: a class's ``keras_names`` are the Keras classes (or
function names) it stands for, its ``keras_refuses`` the Keras settings it cannot honour, and
each parameter's ``keras`` name the Keras argument it takes its value from. Today that gives
(Keras -> nnserve):

- ``InputLayer`` -> nothing (its ``batch_shape[1:]`` becomes ``input_shape``, and their product
  ``input_dim``, checked against the data);
- ``Dense`` -> ``dense`` with ``units``, ``activation``, ``use_bias``, ``kernel_initializer``,
  ``bias_initializer`` and an L1/L2/L1L2 ``kernel_regularizer``; ``Conv1D``/``Conv2D`` -> ``conv1d``/
  ``conv2d`` with those and ``filters``, ``kernel_size``, ``strides``, ``padding``, ``dilation_rate``;
- ``MaxPooling1D/2D``, ``AveragePooling1D/2D`` (``pool_size``, ``strides``, ``padding``),
  ``GlobalAveragePooling1D/2D``, ``GlobalMaxPooling1D/2D`` (``keepdims``), ``Flatten``, ``Reshape``
  (``target_shape``), ``ZeroPadding2D`` (``padding``), ``BatchNormalization`` (``axis`` -1,
  ``momentum``, ``epsilon``, ``center``, ``scale``);
- ``Dropout`` -> ``dropout`` (``rate``); ``SpatialDropout2D`` -> ``spatial_dropout2d``; ``Activation`` -> ``activation``;
- the dtype policy ``float32``/``float64`` -> ``dtype``; input scaling is ``"none"``, as in Keras;
- ``compile_config``: the optimizer (SGD, Adam, RMSprop, Adagrad with their hyperparameters and
  clipping), the loss (by class or function name, with ``from_logits`` and Huber's ``delta``)
  and the metrics become training defaults, which the job's ``training`` object overrides.

Config keys nnserve does not model (names, seeds, ``trainable``...) are ignored. A layer class,
optimizer, loss or setting that would change the computation and that nnserve cannot honour
(a bias regularizer, a constraint, label smoothing, a learning-rate schedule object...) raises
SpecError naming it, rather than training something else silently; so does a setting nnserve
honours at one value only (a class's ``keras_fixed``: ``data_format`` ``channels_first``,
``groups`` above 1, batch normalization's initializers other than Keras's defaults).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .activations import ACTIVATIONS
from .errors import Loc, SpecError
from .initializers import INITIALIZERS
from .layers import LAYERS, Layer
from .losses import LOSSES, Loss
from .metrics import METRICS
from .optimizers import OPTIMIZERS, Optimizer
from .params import Component, Configurable, Nested, Optional, Param, Registry

INPUT_LAYER = "InputLayer"


def keras_name(cls: type[Configurable]) -> str:
    """The name Keras gives the class (``Dense``, ``SGD``), or ours."""
    return cls.keras_names[0] if cls.keras_names else str(getattr(cls, "name", cls.__name__))


def _keras_aliases(registry: Registry[Any]) -> dict[str, str]:
    """Every name Keras may use for a class of ``registry`` -> our name."""
    return {alias: name for name, cls in registry.items() for alias in (name, *cls.keras_names)}


def _one_of(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def supported_layers() -> list[str]:
    """The Keras layer classes a document may hold."""
    return [INPUT_LAYER, *(keras_name(cls) for cls in LAYERS.values() if cls.keras_names)]


@dataclass
class KerasImport:
    spec: dict[str, Any]
    training: dict[str, Any]  # defaults from compile_config; the caller's training settings win
    input_dim: int | None  # the number of values in one sample (the product of input_shape)
    input_shape: list[int] | None = None  # the InputLayer's sample shape, ``[H, W, C]`` for images


def snake_case(name: str) -> str:
    """``GlorotUniform`` -> ``glorot_uniform``, ``SparseCategoricalCrossentropy`` -> ``sparse_categorical_crossentropy``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def from_keras(document: dict[str, Any] | str) -> KerasImport:
    """Our model spec and training defaults from a Keras ``Sequential`` document (object or JSON text)."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as error:
            raise SpecError((), f"is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("class_name") != "Sequential":
        received = document.get("class_name") if isinstance(document, dict) else type(document).__name__
        raise SpecError("class_name", f"only Keras Sequential models are supported; received {received!r}")
    config = _object(document.get("config"), "config")
    layers: list[dict[str, Any]] = []
    input_shape: list[int] | None = None
    for i, layer in enumerate(_list(config.get("layers"), ("config", "layers"))):
        try:
            converted = _layer(layer)
        except SpecError as error:
            raise error.within("config", "layers", i) from None
        if converted is None:
            shape = _object(layer.get("config"), ("config", "layers", i, "config")).get("batch_shape")
            if shape is not None and not isinstance(shape, list):
                raise SpecError(("config", "layers", i, "config", "batch_shape"), f"must be a list; received {shape!r}")
            dims = shape[1:] if shape else []
            if dims and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
                input_shape = dims
        else:
            layers.append(converted)
    spec = {"layers": layers, "input_scaling": "none", "dtype": _dtype(config.get("dtype"))}
    try:
        training = _training(_object(document.get("compile_config") or {}, ()))
    except SpecError as error:
        raise error.within("compile_config") from None
    input_dim = int(math.prod(input_shape)) if input_shape else None
    return KerasImport(spec, training, input_dim, input_shape)


def _layer(layer: Any) -> dict[str, Any] | None:
    layer = _object(layer, ())
    kind = layer.get("class_name")
    classes = {keras_name(cls): cls for cls in LAYERS.values() if cls.keras_names}
    if kind == INPUT_LAYER:
        return None
    if kind not in classes:
        raise SpecError(
            "class_name", f"unsupported Keras layer {kind!r}; nnserve supports {', '.join(supported_layers())}"
        )
    try:
        return _layer_config(classes[kind], _object(layer.get("config"), ()))
    except SpecError as error:
        raise error.within("config") from None


def _layer_config(cls: type[Layer], config: dict[str, Any]) -> dict[str, Any]:
    """Our spec of layer ``cls`` from its Keras ``config`` (errors located within it): every declared
    parameter Keras has, where the document sets it."""
    for key in cls.keras_refuses:
        _unsupported(config, key)
    for key, only in cls.keras_fixed.items():
        _fixed(config, key, only)
    return {"type": cls.type, **_parameters(cls, config)}


def _parameters(cls: type[Configurable], config: dict[str, Any]) -> dict[str, Any]:
    """Our parameters of ``cls`` from a Keras config: those it declares a Keras name for, when set."""
    converted = {}
    for name, param in cls.hyperparameters.items():
        if param.keras is not None and config.get(param.keras) is not None:
            converted[name] = _value(param, config[param.keras], param.keras)
    return converted


def _value(param: Param[Any], value: Any, field: str) -> Any:
    """A Keras config value as our spec has it: serialized Keras objects become our names and objects."""
    constraint = param.constraint
    if isinstance(constraint, Optional):
        constraint = constraint.inner
    if isinstance(constraint, Component) and constraint.registry is ACTIVATIONS:
        return _activation(value)
    if isinstance(constraint, Component) and constraint.registry is INITIALIZERS:
        return _initializer(value, field)
    if isinstance(constraint, Nested) and isinstance(value, Mapping):
        return _nested(constraint.cls, value, field)
    return value


def _activation(value: Any) -> Any:
    if isinstance(value, dict):  # a serialized activation function or layer
        name = (
            _config(value, "activation").get("name")
            if value.get("class_name") == "function"
            else value.get("class_name")
        )
        return snake_case(name) if isinstance(name, str) else value
    return value


def _initializer(value: Any, field: str) -> Any:
    if isinstance(value, str):
        return value
    value = _object(value, field)
    name = snake_case(str(value.get("class_name")))
    cls = INITIALIZERS.get(name)
    params = _parameters(cls, _config(value, field)) if cls is not None else {}
    return {"name": name, **params} if params else name


def _nested(cls: type[Configurable], value: Mapping[str, Any], field: str) -> dict[str, Any]:
    """A serialized Keras object (``{"class_name": "L2", "config": {...}}``) of one of ``cls``'s Keras classes."""
    kind = value.get("class_name")
    if kind not in cls.keras_names:
        raise SpecError(
            (field, "class_name"),
            f"unsupported {cls.__name__.lower()} {kind!r}; expected {_one_of(list(cls.keras_names))}",
        )
    return _parameters(cls, _config(value, field))


def _dtype(value: Any) -> str:
    name = _config(value, ("config", "dtype")).get("name") if isinstance(value, dict) else value
    if name in (None, "float32"):
        return "float32"
    if name == "float64":
        return "float64"
    raise SpecError(("config", "dtype"), f"unsupported dtype policy {name!r}; expected float32 or float64")


def _training(compile_config: dict[str, Any]) -> dict[str, Any]:
    training: dict[str, Any] = {}
    if compile_config.get("optimizer") is not None:
        training["optimizer"] = _optimizer(compile_config["optimizer"])
    if compile_config.get("loss") is not None:
        training["loss"] = _loss(compile_config["loss"])
    metrics = compile_config.get("metrics") or []
    if metrics:
        aliases = _keras_aliases(METRICS)
        names = []
        for i, metric in enumerate(_list(metrics, "metrics")):
            name = metric
            if isinstance(metric, dict):
                name = _config(metric, ("metrics", i)).get("name")
            if not isinstance(name, str) or name not in aliases:
                raise SpecError(
                    ("metrics", i), f"unsupported metric {name!r}; expected one of {', '.join(sorted(aliases))}"
                )
            names.append(aliases[name])
        training["metrics"] = list(dict.fromkeys(names))
    return training


def _optimizer(value: Any) -> dict[str, Any] | str:
    if isinstance(value, str):
        return value.lower()
    value = _object(value, "optimizer")
    classes: dict[str, type[Optimizer]] = {keras_name(cls).lower(): cls for cls in OPTIMIZERS.values()}
    cls = classes.get(str(value.get("class_name", "")).lower())
    if cls is None:
        raise SpecError(
            ("optimizer", "class_name"),
            f"unsupported optimizer {value.get('class_name')!r}; expected {_one_of([keras_name(c) for c in classes.values()])}",
        )
    config = _config(value, "optimizer")
    if isinstance(config.get("learning_rate"), dict):
        raise SpecError(
            ("optimizer", "learning_rate"),
            "learning-rate schedule objects are not supported; use training.optimizer.schedule",
        )
    for key in cls.keras_refuses:
        _unsupported(config, key, ("optimizer", "config"))
    if config.get("use_ema"):
        raise SpecError(("optimizer", "config", "use_ema"), "exponential moving averages of weights are not supported")
    optimizer = {"name": cls.name, **_parameters(cls, config)}
    if "learning_rate" in optimizer:  # Keras stores it as float32; give back the decimal the user wrote
        rate = optimizer["learning_rate"]
        if not isinstance(rate, int | float) or isinstance(rate, bool):
            raise SpecError(("optimizer", "config", "learning_rate"), f"must be a number; received {rate!r}")
        optimizer["learning_rate"] = float(f"{rate:.7g}")
    return optimizer


def _loss(value: Any) -> dict[str, Any] | str:
    aliases = _keras_aliases(LOSSES)
    if isinstance(value, str):
        return aliases.get(value, value)
    value = _object(value, "loss")
    config = _config(value, "loss")
    name = config.get("name") or snake_case(str(value.get("class_name")))
    name = aliases.get(name, name)
    if config.get("label_smoothing"):
        raise SpecError(("loss", "label_smoothing"), "label smoothing is not supported")
    if config.get("ignore_class") is not None:
        raise SpecError(("loss", "ignore_class"), "ignore_class is not supported")
    cls: type[Loss] | None = LOSSES.get(name)
    # Only what differs from our defaults: the spec then reads as the user would write it.
    params = (
        {}
        if cls is None
        else {k: v for k, v in _parameters(cls, config).items() if v != cls.hyperparameters[k].default}
    )
    return {"name": name, **params} if params else name


def _unsupported(config: dict[str, Any], key: str, at: Loc = ()) -> None:
    if config.get(key) not in (None, False):
        raise SpecError((*at, key), f"{key}={config[key]!r} is not supported by nnserve")


def _fixed(config: dict[str, Any], key: str, only: Any) -> None:
    """Refuse ``config[key]`` unless it is ``only`` (a serialized object: its class name; names compare in snake case)."""
    value = config.get(key)
    if isinstance(value, dict):
        value = value.get("class_name")
    if value is None:
        return
    same = snake_case(value) == snake_case(only) if isinstance(value, str) and isinstance(only, str) else value == only
    if not same:
        raise SpecError(key, f"{key}={value!r} is not supported by nnserve (only {only!r})")


def _object(value: Any, field: str | Loc) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(field, f"must be an object; received {value!r}")
    return value


def _config(value: Mapping[str, Any], field: str | Loc) -> dict[str, Any]:
    """The ``config`` object of a serialized Keras object (``{}`` when absent); ``field`` locates the object."""
    config = value.get("config")
    if config is None:
        return {}
    return _object(config, (*((field,) if isinstance(field, str) else field), "config"))


def _list(value: Any, field: str | Loc) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(field, f"must be a list; received {value!r}")
    return value
