"""Optimizers (Keras's update rules and defaults) and learning-rate schedules.

The base class owns the step counter, the learning rate and its schedule, and gradient
clipping. A subclass states its update rule once, in place, for one parameter array
and that array's state (``slots``). The model hands over a single flat parameter
buffer and its gradient, so one update touches every weight in a handful of NumPy
calls; state lives in lists aligned with the parameter list, never keyed by a layer's
parameter name.

Schedules are evaluated once per epoch (``start_epoch``), and ``lr_scale`` lets
reduce-on-plateau lower the rate on top of them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .config import check_bool, check_float, check_int, from_spec
from .errors import SpecError

OPTIMIZERS: dict[str, type[Optimizer]] = {}
SCHEDULES: dict[str, type[Schedule]] = {}


# Schedules ---------------------------------------------------------------------------


class Schedule:
    """``rate(initial, epoch)``: the learning rate for a 0-based epoch."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            SCHEDULES[cls.name] = cls

    def rate(self, initial: float, epoch: int) -> float:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {}

    def spec(self) -> str | dict[str, Any]:
        params = self.config()
        return {"name": self.name, **params} if params else self.name


class Constant(Schedule):
    name = "constant"

    def rate(self, initial, epoch):
        return initial


class StepDecay(Schedule):
    """initial * drop ** floor(epoch / every)."""

    name = "step"

    def __init__(self, drop: float = 0.5, every: int = 10):
        self.drop = check_float("drop", drop, minimum=0.0, maximum=1.0, min_inclusive=False)
        self.every = check_int("every", every)

    def rate(self, initial, epoch):
        return initial * self.drop ** (epoch // self.every)

    def config(self):
        return {"drop": self.drop, "every": self.every}


class ExponentialDecay(Schedule):
    """initial * decay_rate ** (epoch / decay_epochs), the exponent floored when ``staircase``."""

    name = "exponential"

    def __init__(self, decay_rate: float = 0.96, decay_epochs: int = 1, staircase: bool = False):
        self.decay_rate = check_float("decay_rate", decay_rate, minimum=0.0, min_inclusive=False)
        self.decay_epochs = check_int("decay_epochs", decay_epochs)
        self.staircase = check_bool("staircase", staircase)

    def rate(self, initial, epoch):
        exponent = epoch / self.decay_epochs
        return initial * self.decay_rate ** (math.floor(exponent) if self.staircase else exponent)

    def config(self):
        return {"decay_rate": self.decay_rate, "decay_epochs": self.decay_epochs, "staircase": self.staircase}


class CosineDecay(Schedule):
    """initial * ((1 - alpha) * (1 + cos(pi * min(epoch, E) / E)) / 2 + alpha), E = ``decay_epochs``
    (the number of training epochs when absent)."""

    name = "cosine"

    def __init__(self, decay_epochs: int | None = None, alpha: float = 0.0):
        self.decay_epochs = None if decay_epochs is None else check_int("decay_epochs", decay_epochs)
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)
        self.epochs = 1  # set by the trainer when decay_epochs is absent

    def rate(self, initial, epoch):
        span = self.decay_epochs or self.epochs
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(epoch, span) / span))
        return initial * ((1.0 - self.alpha) * cosine + self.alpha)

    def config(self):
        return {"decay_epochs": self.decay_epochs, "alpha": self.alpha}


# Optimizers ---------------------------------------------------------------------------


class Optimizer:
    name: ClassVar[str]
    slot_names: ClassVar[tuple[str, ...]] = ()
    needs_scratch: ClassVar[bool] = False
    """Whether ``update`` needs a scratch array besides the gradient, which it may overwrite."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            OPTIMIZERS[cls.name] = cls

    def __init__(
        self,
        learning_rate: float,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        schedule: Any = "constant",
    ):
        self.initial_learning_rate = check_float("learning_rate", learning_rate, minimum=0.0, min_inclusive=False)
        self.clipnorm = (
            None if clipnorm is None else check_float("clipnorm", clipnorm, minimum=0.0, min_inclusive=False)
        )
        self.clipvalue = (
            None if clipvalue is None else check_float("clipvalue", clipvalue, minimum=0.0, min_inclusive=False)
        )
        self.global_clipnorm = (
            None
            if global_clipnorm is None
            else check_float("global_clipnorm", global_clipnorm, minimum=0.0, min_inclusive=False)
        )
        try:
            self.schedule: Schedule = from_spec(schedule, SCHEDULES)
        except SpecError as error:
            raise error.within("schedule") from None
        self.learning_rate = self.initial_learning_rate
        self.lr_scale = 1.0
        self.iterations = 0
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.slots: list[dict[str, np.ndarray]] = []
        self.clip_views: list[np.ndarray] = []

    def config(self) -> dict[str, Any]:
        """Every hyperparameter, so a saved spec does not depend on the defaults of a later version."""
        config = {"name": self.name, "learning_rate": self.initial_learning_rate}
        config.update(self.hyperparameters())
        for key in ("clipnorm", "clipvalue", "global_clipnorm"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        if self.schedule.name != "constant":
            config["schedule"] = self.schedule.spec()
        return config

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def build(self, params: list[np.ndarray], grads: list[np.ndarray], clip_views: list[np.ndarray] = ()) -> None:
        """Take the arrays to update, and (for ``clipnorm``) the per-variable views of the gradients."""
        self.params, self.grads, self.clip_views = list(params), list(grads), list(clip_views)
        self.slots = [self.new_slots(p) for p in self.params]
        self._scratch = [np.empty_like(p) if self.needs_scratch else None for p in self.params]

    def new_slots(self, param: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.zeros_like(param) for name in self.slot_names}

    def start_epoch(self, epoch: int) -> None:
        self.learning_rate = self.schedule.rate(self.initial_learning_rate, epoch) * self.lr_scale

    def step(self) -> None:
        """Clip the gradients, then apply one update to every parameter array.

        The gradients are used up: an update may overwrite them (the next backward pass writes
        them anew), which spares the optimizer an array as large as the model."""
        self._clip()
        self.iterations += 1
        for param, grad, slots, scratch in zip(self.params, self.grads, self.slots, self._scratch):
            self.update(param, grad, slots, scratch)

    def update(self, param, grad, slots, scratch) -> None:
        raise NotImplementedError

    def _clip(self) -> None:
        if self.clipvalue is not None:
            for grad in self.grads:
                np.clip(grad, -self.clipvalue, self.clipvalue, out=grad)
        if self.clipnorm is not None:
            for grad in self.clip_views:
                norm = math.sqrt(float(np.vdot(grad, grad)))
                if norm > self.clipnorm:
                    grad *= self.clipnorm / norm
        if self.global_clipnorm is not None:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in self.grads))
            if norm > self.global_clipnorm:
                for grad in self.grads:
                    grad *= self.global_clipnorm / norm

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Scalars (JSON-able) and slot arrays, enough for ``load_state`` to resume exactly."""
        arrays = {f"{i}.{name}": array for i, slots in enumerate(self.slots) for name, array in slots.items()}
        return {"iterations": self.iterations, "lr_scale": self.lr_scale}, arrays

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.iterations = int(scalars["iterations"])
        self.lr_scale = float(scalars["lr_scale"])
        for i, slots in enumerate(self.slots):
            for name, array in slots.items():
                np.copyto(array, arrays[f"{i}.{name}"])


class SGD(Optimizer):
    """v = momentum * v - lr * g;  w += v (nesterov: w += momentum * v - lr * g).  Without momentum: w -= lr * g."""

    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **common):
        super().__init__(learning_rate, **common)
        self.momentum = check_float("momentum", momentum, minimum=0.0, maximum=1.0)
        self.nesterov = check_bool("nesterov", nesterov)
        self.slot_names = ("velocity",) if self.momentum else ()

    def hyperparameters(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def update(self, param, grad, slots, scratch):
        grad *= self.learning_rate  # lr * g, in the gradient's own buffer
        if not self.momentum:
            param -= grad
            return
        velocity = slots["velocity"]
        velocity *= self.momentum
        velocity -= grad
        if self.nesterov:
            param -= grad
            np.multiply(velocity, self.momentum, out=grad)
            param += grad
        else:
            param += velocity


class Adam(Optimizer):
    """m += (g - m)(1 - beta_1);  v += (g^2 - v)(1 - beta_2);  w -= lr_t m / (sqrt(v) + epsilon),
    lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t).  ``amsgrad`` divides by the running maximum of v.

    The slots hold m / (1 - beta_1) and v / (1 - beta_2): the same update, written
    ``M = beta_1 M + g``, ``V = beta_2 V + g^2``, takes two NumPy calls fewer per step,
    which small models feel.
    """

    name = "adam"

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        **common,
    ):
        super().__init__(learning_rate, **common)
        self.beta_1 = check_float("beta_1", beta_1, minimum=0.0, maximum=1.0, max_inclusive=False)
        self.beta_2 = check_float("beta_2", beta_2, minimum=0.0, maximum=1.0, max_inclusive=False)
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, min_inclusive=False)
        self.amsgrad = check_bool("amsgrad", amsgrad)
        self.slot_names = ("m", "v", "v_hat") if self.amsgrad else ("m", "v")

    def hyperparameters(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon, "amsgrad": self.amsgrad}

    def update(self, param, grad, slots, scratch):
        t, b1, b2 = self.iterations, self.beta_1, self.beta_2
        lr_t = self.learning_rate * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        root = math.sqrt(1.0 - b2)
        m, v = slots["m"], slots["v"]
        m *= b1
        m += grad
        v *= b2
        np.multiply(grad, grad, out=grad)  # the gradient is not needed after this: its buffer is the scratch
        v += grad
        if self.amsgrad:
            np.maximum(slots["v_hat"], v, out=slots["v_hat"])
            v = slots["v_hat"]
        np.sqrt(v, out=grad)
        grad += self.epsilon / root
        np.divide(m, grad, out=grad)
        grad *= lr_t * (1.0 - b1) / root
        param -= grad


class RMSprop(Optimizer):
    """v = rho v + (1 - rho) g^2;  step = lr g / sqrt(v + epsilon) (centered: v - mean(g)^2);
    with momentum: m = momentum m + step, w -= m;  else w -= step.

    As in Adam, the slots hold v / (1 - rho) and the centered mean as mean / (1 - rho).
    """

    name = "rmsprop"
    needs_scratch = True  # the gradient is needed whole after its square

    def __init__(
        self,
        learning_rate: float = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        **common,
    ):
        super().__init__(learning_rate, **common)
        self.rho = check_float("rho", rho, minimum=0.0, maximum=1.0, max_inclusive=False)
        self.momentum = check_float("momentum", momentum, minimum=0.0, maximum=1.0)
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, min_inclusive=False)
        self.centered = check_bool("centered", centered)
        self.slot_names = (
            ("velocity",) + (("average_gradient",) if centered else ()) + (("momentum",) if self.momentum else ())
        )

    def hyperparameters(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon, "centered": self.centered}

    def update(self, param, grad, slots, scratch):
        rho, keep = self.rho, 1.0 - self.rho
        velocity = slots["velocity"]
        velocity *= rho
        np.multiply(grad, grad, out=scratch)
        velocity += scratch
        if self.centered:
            average = slots["average_gradient"]
            average *= rho
            average += grad
            np.multiply(average, average, out=scratch)
            scratch *= -keep
            scratch += velocity
            scratch += self.epsilon / keep
        else:
            # v + epsilon = keep * (V + epsilon / keep), so sqrt(v + epsilon) = sqrt(keep) sqrt(V + epsilon / keep).
            np.add(velocity, self.epsilon / keep, out=scratch)
        np.sqrt(scratch, out=scratch)
        np.divide(grad, scratch, out=scratch)
        scratch *= self.learning_rate / math.sqrt(keep)
        if self.momentum:
            buffer = slots["momentum"]
            buffer *= self.momentum
            buffer += scratch
            param -= buffer
        else:
            param -= scratch


class Adagrad(Optimizer):
    """acc += g^2;  w -= lr g / sqrt(acc + epsilon); the accumulator starts at ``initial_accumulator_value``."""

    name = "adagrad"
    slot_names = ("accumulator",)
    needs_scratch = True

    def __init__(
        self, learning_rate: float = 0.001, initial_accumulator_value: float = 0.1, epsilon: float = 1e-7, **common
    ):
        super().__init__(learning_rate, **common)
        self.initial_accumulator_value = check_float(
            "initial_accumulator_value", initial_accumulator_value, minimum=0.0
        )
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, min_inclusive=False)

    def hyperparameters(self):
        return {"initial_accumulator_value": self.initial_accumulator_value, "epsilon": self.epsilon}

    def new_slots(self, param):
        return {"accumulator": np.full_like(param, self.initial_accumulator_value)}

    def update(self, param, grad, slots, scratch):
        accumulator = slots["accumulator"]
        np.multiply(grad, grad, out=scratch)
        accumulator += scratch
        np.add(accumulator, self.epsilon, out=scratch)
        np.sqrt(scratch, out=scratch)
        np.divide(grad, scratch, out=scratch)
        scratch *= self.learning_rate
        param -= scratch


def get(spec: Any) -> Optimizer:
    """An optimizer from ``"adam"`` or ``{"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, ...}``."""
    return from_spec(spec, OPTIMIZERS)
