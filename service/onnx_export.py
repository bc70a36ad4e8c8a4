"""A trained model as an ONNX graph, so it can be served by any ONNX runtime: ``GET /v1/models/{ref}/onnx``.

The graph takes the raw feature rows and gives what ``/v1/.../predict`` gives besides the labels:

- one input, ``input``: FLOAT (DOUBLE for a float64 model) of shape ``[N, n_features]``;
- the model's standard scaling, when it has one, as ``Sub`` (the training mean) and ``Div`` (the
  standard deviation) nodes inside the graph;
- each dense layer as ``MatMul`` and ``Add``; each activation as its ONNX operator (``Relu``, ``LeakyRelu``,
  ``Elu``, ``Selu``, ``Sigmoid``, ``HardSigmoid``, ``Tanh``, ``Softmax``, ``Softplus``); GELU from ``Erf``
  (or ``Tanh`` for the approximate form), since ``Gelu`` is an operator only from opset 20; dropout, the
  identity at inference, as nothing;
- a loss trained ``from_logits`` adds the ``Softmax`` (or ``Sigmoid``) that predict applies;
- one output: a classifier's ``probabilities`` ``[N, n_classes]`` (a single sigmoid unit's ``p`` as the two
  columns ``1 - p, p``, as ``predict_proba`` gives), or a regressor's ``predictions`` (``[N]`` for one
  target, ``[N, n_targets]`` for several), with the class labels as JSON in ``metadata_props["classes"]``.

IR version 8 and opset 17 are pinned so that older runtimes load it (onnxruntime 1.14 and later). The
result is checked with ``onnx.checker`` before it is returned.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nnserve import __version__

IR_VERSION = 8
OPSET = 17
INPUT = "input"
MEDIA_TYPE = "application/octet-stream"
ELEMENT_TYPES = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("float64"): TensorProto.DOUBLE}


class _Graph:
    """Nodes and constants appended in order, each output a fresh name."""

    def __init__(self, dtype: np.dtype[Any]):
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: Any) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=self.dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attributes: Any) -> str:
        output = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output


class NotExportable(ValueError):
    """The model holds a layer or activation this exporter does not write yet (the convolutional layers)."""


def export(model: Any) -> bytes:
    """``model`` (a trained ``engine.Model``) as a serialized, checked ONNX model; NotExportable for a
    layer or activation it does not write yet."""
    dtype = np.dtype(model.dtype)
    graph = _Graph(dtype)
    x = INPUT
    if model.scaler is not None:
        x = graph.op("Sub", [x, graph.constant("mean", model.scaler.mean)], "centered")
        x = graph.op("Div", [x, graph.constant("scale", model.scaler.scale)], "scaled")
    for op in model.ops:
        if op.type == "dense":
            x = graph.op("MatMul", [x, graph.constant("kernel", op.params["kernel"])], "dense")
            if op.use_bias:
                x = graph.op("Add", [x, graph.constant("bias", op.params["bias"])], "dense")
        elif op.type == "activation":
            x = _activation(graph, op.activation, x)
        elif op.type != "dropout":  # dropout is the identity at inference
            raise NotExportable(f"no ONNX export for the layer type {op.type!r} yet")
    n_outputs = model.n_outputs
    loss = model.training.loss
    if loss is not None and loss.from_logits:  # predict turns logits into probabilities (Model._outputs)
        x = graph.op("Softmax", [x], axis=-1) if n_outputs > 1 else graph.op("Sigmoid", [x])
    rows = "N"
    if model.task == "classification":
        output, width = "probabilities", max(n_outputs, 2)
        if n_outputs == 1:  # one sigmoid unit: p is the second class's probability
            x = graph.op("Concat", [graph.op("Sub", [graph.constant("one", 1.0), x]), x], axis=1)
        graph.nodes.append(helper.make_node("Identity", [x], [output]))
        shape: list[Any] = [rows, width]
    else:
        output = "predictions"
        if n_outputs == 1:
            shape_constant = numpy_helper.from_array(np.array([-1], dtype=np.int64), graph.name("flat"))
            graph.initializers.append(shape_constant)
            graph.nodes.append(helper.make_node("Reshape", [x, shape_constant.name], [output]))
            shape = [rows]
        else:
            graph.nodes.append(helper.make_node("Identity", [x], [output]))
            shape = [rows, n_outputs]
    element = ELEMENT_TYPES[dtype]
    onnx_graph = helper.make_graph(
        graph.nodes,
        "nnserve",
        [helper.make_tensor_value_info(INPUT, element, [rows, model.n_features])],
        [helper.make_tensor_value_info(output, element, shape)],
        graph.initializers,
    )
    onnx_model = helper.make_model(
        onnx_graph,
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="nnserve",
        producer_version=__version__,
    )
    classes = model.classes if model.task == "classification" else None
    helper.set_model_props(onnx_model, {"classes": json.dumps(classes)} if classes is not None else {})
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model.SerializeToString()


def _activation(graph: _Graph, fn: Any, x: str) -> str:
    """The nodes computing activation ``fn`` of ``x`` (as ``engine.activations`` defines it)."""
    name = fn.name
    if name == "linear":
        return x
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus"}
    if name in simple:
        return graph.op(simple[name], [x])
    if name == "softmax":  # row-wise; from opset 13 Softmax normalizes along the one axis given
        return graph.op("Softmax", [x], axis=-1)
    if name == "leaky_relu":
        return graph.op("LeakyRelu", [x], alpha=float(fn.alpha))
    if name == "elu":
        return graph.op("Elu", [x], alpha=float(fn.alpha))
    if name == "selu":
        return graph.op("Selu", [x], alpha=float(fn.alpha), gamma=float(fn.scale))
    if name == "hard_sigmoid":  # Keras 3's relu6(z + 3) / 6 = clip(z / 6 + 0.5, 0, 1)
        return graph.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    if name == "gelu":
        half_z = graph.op("Mul", [x, graph.constant("half", 0.5)])
        if fn.approximate:  # z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))
            cube = graph.op("Mul", [graph.op("Mul", [x, x]), x])
            inner = graph.op("Add", [x, graph.op("Mul", [cube, graph.constant("c", 0.044715)])])
            t = graph.op("Tanh", [graph.op("Mul", [inner, graph.constant("k", math.sqrt(2.0 / math.pi))])])
        else:  # z/2 (1 + erf(z / sqrt 2))
            t = graph.op("Erf", [graph.op("Mul", [x, graph.constant("r", 1.0 / math.sqrt(2.0))])])
        return graph.op("Mul", [half_z, graph.op("Add", [t, graph.constant("one", 1.0)])])
    raise NotExportable(f"no ONNX export for the activation {name!r} yet")
