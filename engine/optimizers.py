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
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .params import Bool, Component, Configurable, Float, Int, Optional, Param, Registry

OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
SCHEDULES: Registry[Schedule] = Registry("schedule")


# Schedules ---------------------------------------------------------------------------


class Schedule(Configurable, registry=SCHEDULES):
    """``rate(initial, epoch)``: the learning rate for a 0-based epoch."""

    name: ClassVar[str]

    def rate(self, initial: float, epoch: int) -> float:
        raise NotImplementedError


class Constant(Schedule):
    """lr."""

    name = "constant"

    def rate(self, initial: float, epoch: int) -> float:
        return initial


class StepDecay(Schedule):
    """lr · drop^⌊epoch / every⌋."""

    name = "step"
    drop = Param(Float(gt=0.0, le=1.0), 0.5, doc="the factor applied at each step")
    every = Param(Int(ge=1), 10, doc="epochs between steps")

    def rate(self, initial: float, epoch: int) -> float:
        return initial * self.drop ** (epoch // self.every)


class ExponentialDecay(Schedule):
    """lr · decay_rate^(epoch / decay_epochs), the exponent floored when ``staircase``."""

    name = "exponential"
    decay_rate = Param(Float(gt=0.0), 0.96, doc="the factor per decay_epochs")
    decay_epochs = Param(Int(ge=1), 1, doc="epochs over which the rate is multiplied by decay_rate")
    staircase = Param(Bool(), False, doc="decay in steps rather than smoothly")

    def rate(self, initial: float, epoch: int) -> float:
        exponent = epoch / self.decay_epochs
        return float(initial * self.decay_rate ** (math.floor(exponent) if self.staircase else exponent))


class CosineDecay(Schedule):
    """lr · ((1 − alpha)(1 + cos(π · min(epoch, E) / E)) / 2 + alpha), E = ``decay_epochs`` or the
    number of training epochs."""

    name = "cosine"
    decay_epochs = Param(Optional(Int(ge=1)), None, doc="epochs to decay over (null: the training's epochs)")
    alpha = Param(Float(ge=0.0, le=1.0), 0.0, doc="the final rate, as a fraction of lr")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.epochs = 1  # set by the training session when decay_epochs is absent

    def rate(self, initial: float, epoch: int) -> float:
        span = self.decay_epochs or self.epochs
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(epoch, span) / span))
        return initial * ((1.0 - self.alpha) * cosine + self.alpha)


# Optimizers ---------------------------------------------------------------------------

_POSITIVE = Optional(Float(gt=0.0))


def _learning_rate(default: float) -> Param[float]:
    """The one parameter every optimizer has, with a default of its own (Keras's)."""
    return Param(Float(gt=0.0), default, keras=True, doc="the step size (before any schedule)")


class Optimizer(Configurable, registry=OPTIMIZERS):
    """The step counter, the learning rate (``lr``, the schedule's rate for this epoch) and clipping;
    a subclass declares its ``learning_rate`` and hyperparameters and states its ``update``."""

    name: ClassVar[str]
    needs_scratch: ClassVar[bool] = False
    """Whether ``update`` needs a scratch array besides the gradient, which it may overwrite."""
    keras_refuses: ClassVar[tuple[str, ...]] = ("weight_decay", "loss_scale_factor", "gradient_accumulation_steps")
    """Keras optimizer settings that change the computation and that nnserve does not honour."""

    learning_rate: ClassVar[Param[float]]  # declared by each optimizer, with its own default
    clipnorm = Param(
        _POSITIVE, None, keras=True, omit_default=True, doc="clip each weight array's gradient to this norm"
    )
    clipvalue = Param(_POSITIVE, None, keras=True, omit_default=True, doc="clip each gradient into ±clipvalue")
    global_clipnorm = Param(
        _POSITIVE, None, keras=True, omit_default=True, doc="clip all gradients together to this norm"
    )
    schedule = Param(
        Component(SCHEDULES),
        "constant",
        omit_default=True,
        doc="the learning rate per epoch",
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.lr = self.learning_rate
        self.lr_scale = 1.0
        self.iterations = 0
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        self.slots: list[dict[str, np.ndarray]] = []
        self.clip_views: list[np.ndarray] = []
        self._scratch: list[np.ndarray | None] = []

    @property
    def slot_names(self) -> tuple[str, ...]:
        """The state kept per parameter array."""
        return ()

    def build(self, params: list[np.ndarray], grads: list[np.ndarray], clip_views: Sequence[np.ndarray] = ()) -> None:
        """Take the arrays to update, and (for ``clipnorm``) the per-variable views of the gradients."""
        self.params, self.grads, self.clip_views = list(params), list(grads), list(clip_views)
        self.slots = [self.new_slots(p) for p in self.params]
        self._scratch = [np.empty_like(p) if self.needs_scratch else None for p in self.params]

    def new_slots(self, param: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.zeros_like(param) for name in self.slot_names}

    def start_epoch(self, epoch: int) -> None:
        self.lr = self.schedule.rate(self.learning_rate, epoch) * self.lr_scale

    def step(self) -> None:
        """Clip the gradients, then apply one update to every parameter array.

        The gradients are used up: an update may overwrite them (the next backward pass writes
        them anew), which spares the optimizer an array as large as the model."""
        self._clip()
        self.iterations += 1
        for param, grad, slots, scratch in zip(self.params, self.grads, self.slots, self._scratch):
            self.update(param, grad, slots, scratch)

    def update(
        self, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], scratch: np.ndarray | None
    ) -> None:
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


def _scratch(scratch: np.ndarray | None) -> np.ndarray:
    """The scratch array of an optimizer with ``needs_scratch``, which ``build`` always gives one."""
    if scratch is None:
        raise TypeError("this optimizer needs a scratch array: build() it before stepping")
    return scratch


class SGD(Optimizer):
    """v = momentum * v - lr * g;  w += v (nesterov: w += momentum * v - lr * g).  Without momentum: w -= lr * g."""

    name = "sgd"
    keras_names = ("SGD",)
    learning_rate = _learning_rate(0.01)
    momentum = Param(Float(ge=0.0, le=1.0), 0.0, keras=True, doc="the fraction of the last step kept")
    nesterov = Param(Bool(), False, keras=True, doc="Nesterov momentum")

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("velocity",) if self.momentum else ()

    def update(
        self, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], scratch: np.ndarray | None
    ) -> None:
        grad *= self.lr  # lr * g, in the gradient's own buffer
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
    keras_names = ("Adam",)
    learning_rate = _learning_rate(0.001)
    beta_1 = Param(Float(ge=0.0, lt=1.0), 0.9, keras=True, doc="decay of the first moment")
    beta_2 = Param(Float(ge=0.0, lt=1.0), 0.999, keras=True, doc="decay of the second moment")
    epsilon = Param(Float(gt=0.0), 1e-7, keras=True, doc="added to the denominator")
    amsgrad = Param(Bool(), False, keras=True, doc="divide by the running maximum of v (AMSGrad)")

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("m", "v", "v_hat") if self.amsgrad else ("m", "v")

    def update(
        self, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], scratch: np.ndarray | None
    ) -> None:
        t, b1, b2 = self.iterations, self.beta_1, self.beta_2
        lr_t = self.lr * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
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

    keras_names = ("RMSprop",)
    learning_rate = _learning_rate(0.001)
    rho = Param(Float(ge=0.0, lt=1.0), 0.9, keras=True, doc="decay of the mean square")
    momentum = Param(Float(ge=0.0, le=1.0), 0.0, keras=True, doc="the fraction of the last step kept")
    epsilon = Param(Float(gt=0.0), 1e-7, keras=True, doc="added to the mean square")
    centered = Param(Bool(), False, keras=True, doc="subtract the squared mean gradient")

    @property
    def slot_names(self) -> tuple[str, ...]:
        centered = ("average_gradient",) if self.centered else ()
        return ("velocity", *centered, *(("momentum",) if self.momentum else ()))

    def update(
        self, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], scratch: np.ndarray | None
    ) -> None:
        scratch = _scratch(scratch)
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
        scratch *= self.lr / math.sqrt(keep)
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
    keras_names = ("Adagrad",)
    needs_scratch = True
    learning_rate = _learning_rate(0.001)
    initial_accumulator_value = Param(Float(ge=0.0), 0.1, keras=True, doc="the accumulator's starting value")
    epsilon = Param(Float(gt=0.0), 1e-7, keras=True, doc="added to the accumulator")

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("accumulator",)

    def new_slots(self, param: np.ndarray) -> dict[str, np.ndarray]:
        return {"accumulator": np.full_like(param, self.initial_accumulator_value)}

    def update(
        self, param: np.ndarray, grad: np.ndarray, slots: dict[str, np.ndarray], scratch: np.ndarray | None
    ) -> None:
        scratch = _scratch(scratch)
        accumulator = slots["accumulator"]
        np.multiply(grad, grad, out=scratch)
        accumulator += scratch
        np.add(accumulator, self.epsilon, out=scratch)
        np.sqrt(scratch, out=scratch)
        np.divide(grad, scratch, out=scratch)
        scratch *= self.lr
        param -= scratch


def get(spec: Any) -> Optimizer:
    """An optimizer from ``"adam"`` or ``{"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, ...}``."""
    return OPTIMIZERS.from_spec(spec)
