"""The network: a sequence of layers, their weights, and the preprocessing that lets them meet raw data.

Parameters live in one flat buffer and their gradients in another (and the weights kept but
not trained, batch normalization's moving statistics, in a third, ``state``); each layer's
``params`` and ``grads`` (and ``state``) are views into them (kernel then bias, layer by layer: Keras's
``get_weights()`` order). An optimizer then updates every weight in a few NumPy calls,
and a checkpoint is one array.

A ``Network`` is what the model spec declares. ``model.Model`` adds what one does with it
(fit, evaluate, predict); the training session (``training.py``) works on a ``Network``.
Fitting sets four things on it, each by one method called from one place in the session:
the task and classes (``fit_targets``), the input scaler (``fit_scaler``), the settled
loss (``settle_training``) and the weights (``allocate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import convolution, losses, normalization, pooling, reshaping  # noqa: F401  (they register their layer types)
from .errors import SpecError
from .layers import LAYERS, Activation, Dense, Dropout, Layer, Shape
from .params import Choice, Component, Configurable, Constraint, ListOf, Param
from .preprocessing import LabelEncoder, StandardScaler
from .training_config import TASKS, TrainingConfig

INPUT_SCALINGS = ("standard", "none")
DTYPES = ("float32", "float64")


class FloatType(Constraint[np.dtype[Any]]):
    """One of ``DTYPES``, cleaned to a NumPy dtype (chosen once here and carried through)."""

    names = Choice(DTYPES)

    def accepts(self, value: object) -> bool:
        return self.names.accepts(value)

    def check(self, value: object, name: str) -> np.dtype[Any]:
        return np.dtype(self.names.check(value, name))

    def dump(self, value: np.dtype[Any]) -> Any:
        return value.name

    def json_schema(self) -> dict[str, Any]:
        return self.names.json_schema()

    def describe(self) -> str:
        return self.names.describe()


def _all_finite(x: np.ndarray, chunk: int = 4096) -> bool:
    """True when every value is finite, without a boolean array the size of ``x``.

    Small arrays (a prediction request) take the plain test. For large ones, ``x @ ones`` is
    finite exactly when every row is (NaN and inf propagate through the sums), and BLAS
    computes it in a quarter of the time of a float64 sum; only if it is not finite (NaN,
    inf, or a row whose finite values overflow when added) are the rows checked one chunk
    at a time.
    """
    if x.size <= 65536:
        return bool(np.isfinite(x).all())
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x @ np.ones(x.shape[1], dtype=x.dtype)).all():
            return True
    return all(np.isfinite(x[i : i + chunk]).all() for i in range(0, len(x), chunk))


class Network(Configurable):
    """Layers, weights, input scaling and label encoding: everything a prediction needs."""

    layers = Param(
        ListOf(Component(LAYERS), what="layers", min_length=1),
        doc="the network, input to output (the input shape comes from the data: rows, or images `(H, W, C)`)",
    )
    input_scaling = Param(
        Choice(INPUT_SCALINGS),
        "standard",
        doc="`standard`: inputs are standardized with the mean and standard deviation of the training rows, "
        "stored with the model and applied again at prediction. `none`: raw inputs (Keras's behaviour; the "
        "default for imported Keras documents)",
    )
    dtype = Param(FloatType(), "float32", doc="`float64` for double precision")

    def __init__(self, **values: Any):
        super().__init__(**values)
        if not any(isinstance(layer, Dense) for layer in self.layers):
            raise SpecError("layers", "needs at least one dense layer")
        self.training = TrainingConfig()  # build() gives the spec's
        self.ops: list[Layer] = []
        self._origin: dict[int, int] = {}  # id(op) -> the index of the spec layer it runs for
        for i, layer in enumerate(self.layers):
            for op in layer.expand():
                self.ops.append(op)
                self._origin[id(op)] = i
        self._mark_in_place()
        # Set by fitting (see the module docstring), or by serialize.loads().
        self.input_shape: Shape | None = None
        """The shape of one input sample (``(features,)`` for rows, ``(H, W, C)`` for images)."""
        self.n_features: int | None = None
        """The number of values in one input sample (the product of ``input_shape``)."""
        self.state: np.ndarray | None = None
        self.task: str | None = None
        self.encoder: LabelEncoder | None = None
        self.scaler: StandardScaler | None = None
        self.params: np.ndarray | None = None
        self.grads: np.ndarray | None = None

    # Structure ----------------------------------------------------------------------

    def _mark_in_place(self) -> None:
        previous = None
        for op in self.ops:
            if isinstance(op, Activation) and previous is not None:
                # A dropout with rate 0 passes its input through, so that input is not its own buffer.
                op.in_place = previous.owns_output or (isinstance(previous, Dropout) and previous.rate > 0)
                # At inference only a layer that owns its output is sure to give a fresh array (dropout
                # passes its input through, which may be the caller's).
                op.in_place_inference = previous.owns_output
            previous = op
        first_trained = next(op for op in self.ops if op.trainable)
        first_trained.propagate = False

    @property
    def n_outputs(self) -> int:
        return next(op.units for op in reversed(self.ops) if isinstance(op, Dense))

    @property
    def built(self) -> bool:
        return self.params is not None

    @property
    def head(self) -> str:
        """The output layer's activation (``"linear"`` when it has none)."""
        last = self.ops[-1]
        return last.activation.name if isinstance(last, Activation) else "linear"

    def spec(self) -> dict[str, Any]:
        """The model spec this model is built from: ``build(model.spec())`` builds the same model."""
        return self.config()

    def shapes(self, input_shape: int | Shape) -> list[Shape]:
        """The sample shape entering each op and, last, the network's output shape, for input samples
        of ``input_shape`` (an int: flat rows of that width). Checks the chain: a layer that cannot
        take what the one before gives raises SpecError naming it (``layers[3]: (flatten) expects ...``)."""
        shape: Shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        index = self._spec_index()
        shapes = [shape]
        for op in self.ops:
            try:
                shape = op.output_shape(shape)
            except SpecError as error:
                raise error.within("layers", index[id(op)]) from None
            shapes.append(shape)
        if shape != (self.n_outputs,):
            raise SpecError(
                "layers", f"the network must end with flat outputs ({self.n_outputs},); its last layer gives {shape}"
            )
        return shapes

    def _spec_index(self) -> dict[int, int]:
        """id(op) -> the index of the spec layer it comes from."""
        return self._origin

    def allocate(self, input_shape: int | Shape, rng: np.random.Generator | None) -> None:
        """Create the flat parameter, gradient and state buffers for input samples of ``input_shape``
        (an int: flat rows of that width) and hand each layer its views; initialize the weights from
        ``rng`` (left at zero when ``rng`` is None). Raises SpecError when the layers do not chain."""
        shapes = self.shapes(input_shape)
        self.params, self.grads = self._views(shapes, "params", "param_shapes", grads="grads")
        self.state, _ = self._views(shapes, "state", "state_shapes")
        self.input_shape = shapes[0]
        self.n_features = int(np.prod(shapes[0]))
        if rng is not None:
            for op, in_shape in zip(self.ops, shapes):
                for name, value in op.initial_values(in_shape, rng, self.dtype).items():
                    (op.params if name in op.params else op.state)[name][...] = value

    def _views(
        self, shapes: list[Shape], attribute: str, shapes_of: str, grads: str | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One flat zeroed buffer (and, with ``grads``, its twin) for every op's arrays of ``shapes_of``,
        handed to each op as views in its ``attribute`` (and ``grads``) dict."""
        arrays = [
            (op, name, shape)
            for op, in_shape in zip(self.ops, shapes)
            for name, shape in getattr(op, shapes_of)(in_shape).items()
        ]
        sizes = [int(np.prod(shape)) for _, _, shape in arrays]
        flat = np.zeros(sum(sizes), dtype=self.dtype)
        twin = np.zeros(sum(sizes), dtype=self.dtype) if grads is not None else None
        offset = 0
        for (op, name, shape), size in zip(arrays, sizes):
            getattr(op, attribute)[name] = flat[offset : offset + size].reshape(shape)
            if grads is not None and twin is not None:
                getattr(op, grads)[name] = twin[offset : offset + size].reshape(shape)
            offset += size
        return flat, twin

    def rows_per_pass(self, most: int, budget: int = 1 << 24) -> int:
        """How many rows one inference pass takes: ``most``, or fewer when one sample's largest
        intermediate array (an im2col matrix, a feature map) times the rows would pass ``budget``
        values (64 MB of float32), so predicting on many images never needs gigabytes at once."""
        if self.input_shape is None:
            return most
        shapes = self.shapes(self.input_shape)
        widest = max(op.working_size(shape) for op, shape in zip(self.ops, shapes))
        return max(1, min(most, budget // max(widest, 1)))

    @property
    def n_parameters(self) -> int:
        return int(self.weights().size)

    def weights(self) -> np.ndarray:
        """The flat parameter buffer; raises SpecError while the model has none."""
        if self.params is None:
            raise SpecError((), "the model has no weights yet: fit it, or load a trained one")
        return self.params

    def gradients(self) -> np.ndarray:
        """The flat gradient buffer, aligned with ``weights()``; raises SpecError while the model has none."""
        if self.grads is None:
            raise SpecError((), "the model has no weights yet: fit it, or load a trained one")
        return self.grads

    def parameter_count(self, input_shape: int | Shape) -> int:
        """How many trained weights the model has for input samples of ``input_shape`` (without building
        it); raises SpecError when the layers do not chain."""
        shapes = self.shapes(input_shape)
        return sum(int(np.prod(s)) for op, shape in zip(self.ops, shapes) for s in op.param_shapes(shape).values())

    def _weight_views(self) -> list[tuple[Layer, str, np.ndarray]]:
        """Every op's parameters, then its state, op by op: Keras's ``get_weights()`` order."""
        return [
            (op, name, array) for op in self.ops for arrays in (op.params, op.state) for name, array in arrays.items()
        ]

    def weight_names(self) -> list[str]:
        """``layers.{i}.{name}`` (kernel, bias, gamma, moving_mean...) for each array of ``get_weights()``,
        i the spec layer's index."""
        index = self._spec_index()
        return [f"layers.{index[id(op)]}.{name}" for op, name, _ in self._weight_views()]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weight arrays in Keras ``get_weights()`` order (per layer: kernel, bias; batch
        normalization: gamma, beta, moving_mean, moving_variance), Keras's shapes (a conv2d kernel is
        ``(kh, kw, channels_in, filters)``)."""
        return [array.copy() for _, _, array in self._weight_views()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        views = [array for _, _, array in self._weight_views()]
        if len(weights) != len(views):
            raise SpecError("weights", f"expected {len(views)} arrays; received {len(weights)}")
        for i, (view, value) in enumerate(zip(views, weights)):
            value = np.asarray(value)
            if value.shape != view.shape:
                raise SpecError(("weights", i), f"expected shape {view.shape}; received {value.shape}")
            view[...] = value

    # Data ---------------------------------------------------------------------------

    def check_inputs(self, x: Any, name: str = "X") -> np.ndarray:
        """``x`` as a ``(samples, *input_shape)`` array of the model's dtype (flat rows of a shaped model's
        ``n_features`` values are reshaped, row-major); wrong shapes and non-finite values raise SpecError.
        Before the model has weights, any array of samples (2-D or more) is taken."""
        given = x
        try:
            with np.errstate(over="ignore"):  # values beyond the dtype become inf, reported below
                x = array = np.asarray(x, dtype=self.dtype)
        except (TypeError, ValueError):
            raise SpecError(name, "must be a 2-D array of numbers") from None
        if x.ndim < 2:
            raise SpecError(name, f"must be 2-D (rows x features); received an array of shape {x.shape}")
        shape = self.input_shape
        if shape is not None and x.shape[1:] != shape:
            if x.ndim == 2 and x.shape[1] == self.n_features:
                x = array = x.reshape((len(x), *shape))
            elif len(shape) == 1:
                raise SpecError(name, f"each row must have {self.n_features} features; received {x.shape[1]}")
            else:
                raise SpecError(
                    name,
                    f"each sample must have shape {list(shape)} (or be a flat row of {self.n_features} values); "
                    f"received {list(x.shape[1:])}",
                )
        width = int(np.prod(x.shape[1:]))
        if not _all_finite(x.reshape(len(x), width)):
            if _all_finite(np.asarray(given, dtype=np.float64).reshape(len(x), width)):
                raise SpecError(
                    name, f"has values beyond the {self.dtype.name} range (±{np.finfo(self.dtype).max:.3g})"
                )
            raise SpecError(name, "contains NaN or infinite values")
        return array

    def fit_targets(self, y: Any, n_rows: int, task: str | None) -> np.ndarray:
        """Set the task (given, or inferred from ``y`` and the loss) and, for classification, the classes
        (a label encoder fitted on ``y``); returns the targets as class indices or an ``(n, outputs)``
        float array."""
        y = np.asarray(y)
        if len(y) != n_rows:
            raise SpecError("y", f"has {len(y)} rows but X has {n_rows}")
        if task is not None and task not in TASKS:
            raise SpecError("task", f"unknown {task!r}; expected one of {', '.join(map(repr, TASKS))}")
        self.task = task or self._infer_task(y)
        if self.task == "regression":
            try:
                values: np.ndarray = y.astype(np.float64).reshape(len(y), -1)
            except (TypeError, ValueError):
                raise SpecError("y", "regression targets must be numbers") from None
            if not np.isfinite(values).all():
                raise SpecError("y", "contains NaN or infinite values")
            return values
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot rows, as Keras's categorical_crossentropy takes them
            if not np.isin(y, (0, 1)).all() or not (y.sum(axis=1) == 1).all():
                raise SpecError("y", "2-D classification targets must be one-hot rows")
            y = y.argmax(axis=1)
        encoder, encoded = LabelEncoder.fit(y.reshape(-1))
        if len(encoder.classes) < 2:
            raise SpecError("y", "a classification task needs at least 2 classes")
        self.encoder = encoder
        return encoded

    def fit_scaler(self, x: np.ndarray, rows: np.ndarray) -> None:
        """Fit the input scaler (when ``input_scaling`` is "standard") on the training rows ``x[rows]``."""
        self.scaler = StandardScaler.fit(x, rows) if self.input_scaling == "standard" else None

    def target_width(self, encoded: np.ndarray) -> int:
        """The number of classes (classification) or of target columns (regression)."""
        return len(self.classifier().classes) if self.task == "classification" else int(encoded.shape[1])

    def classifier(self) -> LabelEncoder:
        """The label encoder of a classification model; raises SpecError for any other."""
        if self.encoder is None:
            raise SpecError((), "the model has no classes: it is not a trained classification model")
        return self.encoder

    def _infer_task(self, y: np.ndarray) -> str:
        """Classification for labels (strings, booleans, integers) or a cross-entropy loss; regression for
        floats, or integers with one output and an explicit regression loss (counts, say)."""
        loss = self.training.loss
        if loss is not None and loss.classification_only:
            return "classification"
        if y.dtype.kind in "fc":
            return "regression"
        if y.dtype.kind in "iu" and y.ndim == 1 and self.n_outputs == 1 and loss is not None:
            return "regression"
        return "classification"

    def encode_targets(self, y: Any, n_rows: int) -> np.ndarray:
        """Targets encoded with the model's own classes, as ``fit_targets`` does (for evaluation,
        validation data, or more training); an unknown class raises SpecError."""
        y = np.asarray(y)
        if len(y) != n_rows:
            raise SpecError("y", f"has {len(y)} rows but X has {n_rows}")
        if self.task == "classification":
            if y.ndim == 2 and y.shape[1] > 1:
                y = y.argmax(axis=1)
            return self.classifier().transform(y.reshape(-1))
        values: np.ndarray = y.astype(np.float64).reshape(len(y), -1)
        return values

    def settle_training(self, task: str, width: int, has_validation: bool) -> losses.Loss:
        """Check the training config against the data before any training: the loss fits the task and
        the output layer, which has ``width`` units (classes or target columns), the metrics fit the
        task, and monitored values will be logged. Records the settled loss in ``training`` and returns
        it; raises SpecError naming the field."""
        loss = self.training.settle_loss(task, self.head, self.n_outputs)
        self.check_head(task, width)
        self.training.check_logs(task, has_validation)
        return loss

    def check_head(self, task: str, width: int) -> None:
        """Check that the output layer fits the task: ``width`` classes, or ``width`` regression targets.

        Raises SpecError naming the output layer (or the loss) and saying what would fit.
        """
        units = self.n_outputs
        last = max(i for i, layer in enumerate(self.layers) if isinstance(layer, Dense))
        where = ("layers", last, "units")
        loss = self.training.loss
        if task == "regression":
            if units != width:
                raise SpecError(
                    where,
                    f"the output layer has {units} units but the data has {width} target column{'s' * (width != 1)}",
                )
            return
        if isinstance(loss, losses.CategoricalCrossentropy):
            if units != width:
                raise SpecError(
                    where, f"the output layer has {units} units but {loss.name} needs one per class: {width}"
                )
            return
        if units != width and not (units == 1 and width == 2):
            hint = " (or 1 sigmoid unit for a binary task)" if width == 2 else ""
            raise SpecError(
                where, f"the output layer has {units} units but the data has {width} classes: use {width}{hint}"
            )

    def forward(self, x: np.ndarray, training: bool = False, ops: list[Layer] | None = None) -> np.ndarray:
        """Outputs of ``ops`` (all of them by default) for an already scaled batch."""
        out = x
        for op in self.ops if ops is None else ops:
            out = op.forward(out, training)
        return out
