"""The Open Inference Protocol (KServe's "Predict Protocol - Version 2") on the wire, for ``routes/v2``.

What a request and a response look like, in JSON and in Triton's binary tensor data extension,
and how a trained model appears as tensors; the prediction itself is ``cache.Entry.prediction``,
the same as ``/v1``'s. References: KServe's ``docs/predict-api/v2/required_api.md`` (the REST
API) and Triton's ``docs/protocol/extension_binary_data.md`` (binary tensors).

- A model is named by its id and has one version, ``"1"``: a trained model never changes.
- One input, ``input``: FP32 (FP64 for a float64 model) of shape ``[-1, *sample_shape]``
  (``[-1, n_features]`` for rows, ``[-1, 8, 8, 1]`` for 8x8 grey images). Any numeric datatype is
  accepted and converted, as the spec allows; ``data`` may be nested or flat; a tensor of flat rows
  as long as a sample is taken too (``shapes.fit_to_model``).
- Outputs: a classifier's ``probabilities`` (``[-1, n_classes]``, columns in the order of its
  classes) and ``predicted_labels`` (BYTES ``[-1]``: the dataset's own labels, as text); a
  regressor's ``predictions`` (``[-1]``, or ``[-1, n_targets]``).
- Binary tensors: with an ``Inference-Header-Content-Length`` header the body is that many bytes
  of JSON followed by the tensors' little-endian bytes, an input's size in its
  ``binary_data_size`` parameter. An output is returned that way when asked by its ``binary_data``
  parameter, or the request's ``binary_data_output``, as tritonclient does by default.
- Malformed requests raise ``BadRequest`` (400); ``errors.py`` renders every error on ``/v2`` as
  the protocol's ``{"error": "..."}``.
"""

from __future__ import annotations

import math
import struct
from typing import Annotated, Any, Protocol

import numpy as np
import orjson
from pydantic import BaseModel, Field, ValidationError

from .errors import BadRequest, UnsupportedMediaType, validation_errors
from .schemas import Request
from .shapes import sample_shape_of

INPUT = "input"
VERSION = "1"
PLATFORM = "nnserve_numpy"
"""``<project>_<format>``, as the spec names platforms: our engine, weights in NumPy arrays."""
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "model_configuration", "statistics"]
HEADER_LENGTH = "Inference-Header-Content-Length"

NUMERIC = {
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
"""The input datatypes we take, as little-endian NumPy dtypes (the binary extension's byte order)."""
FLOAT_DATATYPES = {"float32": "FP32", "float64": "FP64"}

Parameters = dict[str, Any]


# Bodies (also the OpenAPI document's) --------------------------------------------------------


class RequestInput(Request):
    name: str
    shape: list[Annotated[int, Field(strict=True, ge=0)]]
    datatype: str
    parameters: Parameters = Field(default_factory=dict)
    data: Any = Field(
        None, description="Row-major values, nested or flat; left out when the tensor is sent as binary data."
    )


class RepositoryIndexRequest(Request):
    ready: bool = Field(False, description="Only the models ready to answer.")


class RequestOutput(Request):
    name: str
    parameters: Parameters = Field(default_factory=dict)


class InferenceRequest(Request):
    id: str | None = None
    parameters: Parameters = Field(default_factory=dict)
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = Field(None, description="The outputs to return; all of them when left out.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        None, description="Flat, row-major; absent when the tensor follows the JSON as binary data."
    )


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for the number of rows, which may vary.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class InferenceError(BaseModel):
    """The protocol's error form, used by every error on ``/v2``."""

    error: str


# Metadata ------------------------------------------------------------------------------------


def model_config(record: dict[str, Any]) -> dict[str, Any]:
    """Triton's JSON model configuration (``model_config.proto``): name, platform, batching off
    (``max_batch_size`` 0, so each ``dims`` includes the rows, -1), inputs and outputs."""
    metadata = model_metadata(record)

    def tensors(items: list[MetadataTensor]) -> list[dict[str, Any]]:
        return [
            {
                "name": t.name,
                "data_type": "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}",
                "dims": t.shape,
            }
            for t in items
        ]

    registered = record.get("name") and record.get("version") is not None
    return {
        "name": record["name"] if registered else record["id"],
        "platform": PLATFORM,
        "backend": "nnserve",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 0,
        "input": tensors(metadata.inputs),
        "output": tensors(metadata.outputs),
    }


def model_metadata(record: dict[str, Any]) -> ModelMetadata:
    """A model's tensors, from its record (no weights needed)."""
    datatype = FLOAT_DATATYPES[record["model"].get("dtype", "float32")]
    output = record["output"]
    if output["kind"] == "classification":
        outputs = [
            MetadataTensor(name="probabilities", datatype=datatype, shape=[-1, len(output["classes"])]),
            MetadataTensor(name="predicted_labels", datatype="BYTES", shape=[-1]),
        ]
    else:
        shape = [-1] if output["n_outputs"] == 1 else [-1, output["n_outputs"]]
        outputs = [MetadataTensor(name="predictions", datatype=datatype, shape=shape)]
    return ModelMetadata(
        name=record["id"],
        versions=[VERSION],
        platform=PLATFORM,
        inputs=[MetadataTensor(name=INPUT, datatype=datatype, shape=[-1, *sample_shape_of(record["input"])])],
        outputs=outputs,
    )


# Requests ------------------------------------------------------------------------------------


class Headers(Protocol):
    """What ``read_request`` reads of the request's headers (a dict, or werkzeug's ``Headers``)."""

    def get(self, key: str) -> str | None: ...


def read_request(body: bytes, headers: Headers) -> tuple[InferenceRequest, bytes]:
    """The inference request and the binary bytes after its JSON (empty without the extension).
    Any Content-Type is taken: tritonclient sends none. Raises BadRequest."""
    encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    header_length = headers.get(HEADER_LENGTH)
    binary = b""
    if header_length is not None:
        if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(body):
            raise BadRequest(
                f"{HEADER_LENGTH} must be the length of the JSON at the start of the body, "
                f"1 to {len(body)}; received {header_length!r}"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        hint = f" (binary tensors need the {HEADER_LENGTH} header)" if header_length is None else ""
        raise BadRequest(f"the inference request is not valid JSON{hint}: {error}") from None
    try:
        return InferenceRequest.model_validate(data), binary
    except ValidationError as error:
        problems = validation_errors(error, data)
        raise BadRequest("; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in problems[:5])) from None


def input_samples(request: InferenceRequest, binary: bytes) -> np.ndarray:
    """The ``input`` tensor as an array of its datatype and shape, samples along its first axis
    (rows, or images). Raises BadRequest."""
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT]:
        raise BadRequest(f"the model takes one input, {INPUT!r}; received {names}")
    tensor = request.inputs[0]
    dtype = NUMERIC.get(tensor.datatype)
    if dtype is None:
        raise BadRequest(
            f"{INPUT}: datatype {tensor.datatype!r} is not numeric; send FP32 (or another of {', '.join(NUMERIC)})"
        )
    if len(tensor.shape) < 2 or tensor.shape[0] < 1:
        raise BadRequest(
            f"{INPUT}: shape must be [samples, *sample_shape] ([rows, features] for rows) with at least one sample; "
            f"received {tensor.shape}"
        )
    count = math.prod(tensor.shape)
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        expected = count * np.dtype(dtype).itemsize
        if size != expected or len(binary) != size:
            raise BadRequest(
                f"{INPUT}: shape {tensor.shape} of {tensor.datatype} is {expected} bytes; binary_data_size "
                f"says {size!r} and {len(binary)} bytes follow the JSON"
            )
        return np.frombuffer(binary, dtype=dtype).reshape(tensor.shape)
    if binary:
        raise BadRequest(f"{len(binary)} bytes follow the JSON but no input has a binary_data_size parameter")
    if tensor.data is None:
        raise BadRequest(f"{INPUT}: send 'data', or the tensor as binary data with a binary_data_size parameter")
    try:
        values = np.array(tensor.data)
    except ValueError:
        raise BadRequest(f"{INPUT}: data must be a list of numbers, flat or nested as the shape says") from None
    if values.dtype.kind not in "iuf" or values.size != count or values.shape not in ((count,), tuple(tensor.shape)):
        raise BadRequest(
            f"{INPUT}: data must be {count} numbers for shape {tensor.shape}, flat or nested as the shape says; "
            f"received {values.size} {'numbers' if values.dtype.kind in 'iuf' else 'values that are not all numbers'}"
        )
    return values.astype(dtype).reshape(tensor.shape)


# Responses -----------------------------------------------------------------------------------


def encode_response(
    model_name: str, request: InferenceRequest, prediction: dict[str, Any], classes: Any = None
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers for ``prediction`` (``Entry.prediction``'s answer), with the
    outputs the request asks for (``classes``, a classifier's labels, for the classification extension).
    Raises BadRequest for an output the model does not have."""
    tensors = _tensors(prediction)
    requested = request.outputs if request.outputs is not None else [RequestOutput(name=name) for name in tensors]
    names = [output.name for output in requested]
    unknown = [name for name in names if name not in tensors]
    if unknown or len(set(names)) != len(names):
        raise BadRequest(
            f"outputs: this model's outputs are {list(tensors)}, each asked for at most once; received {names}"
        )
    outputs, chunks = [], []
    for output in requested:
        binary = output.parameters.get("binary_data", request.parameters.get("binary_data_output", False))
        if not isinstance(binary, bool):
            raise BadRequest(f"outputs: {output.name}: binary_data must be true or false; received {binary!r}")
        values = tensors[output.name]
        if "classification" in output.parameters:
            values = _classification(output.name, values, output.parameters["classification"], classes)
        described: dict[str, Any] = {"name": output.name, "shape": list(values.shape), "datatype": _datatype(values)}
        if binary:
            chunk = _bytes_of(values)
            described["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            described["data"] = values.ravel().tolist() if values.dtype == object else values.ravel()
        outputs.append(described)
    body: dict[str, Any] = {"model_name": model_name, "model_version": VERSION}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *chunks]), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def _classification(name: str, values: np.ndarray, count: Any, classes: Any) -> np.ndarray:
    """Triton's classification extension: per row, the ``count`` highest scores of ``values`` as BYTES
    ``"score:index:label"`` (score as C's ``%f``, highest first), shape ``[rows, min(count, classes)]``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise BadRequest(f"outputs: {name}: classification must be a positive integer; received {count!r}")
    if values.dtype == object or values.ndim != 2 or classes is None:
        raise BadRequest(f"outputs: {name}: the classification extension applies to a classifier's 'probabilities'")
    labels = [str(label) for label in classes]
    top = np.argsort(-values, axis=1, kind="stable")[:, : min(count, values.shape[1])]
    return np.array(
        [[f"{row[i]:f}:{i}:{labels[i]}" for i in indices] for row, indices in zip(values, top)], dtype=object
    )


def _tensors(prediction: dict[str, Any]) -> dict[str, np.ndarray]:
    if "probabilities" not in prediction:
        return {"predictions": np.asarray(prediction["predictions"])}
    labels = np.array([str(label) for label in prediction["predictions"]], dtype=object)
    return {"probabilities": np.asarray(prediction["probabilities"]), "predicted_labels": labels}


def _datatype(values: np.ndarray) -> str:
    return "BYTES" if values.dtype == object else FLOAT_DATATYPES[values.dtype.name]


def _bytes_of(values: np.ndarray) -> bytes:
    """The binary extension's encoding: little-endian, row-major; BYTES elements each as a 4-byte length and the bytes."""
    if values.dtype != object:
        return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
    encoded = [value.encode() for value in values.ravel()]
    return b"".join(struct.pack("<I", len(item)) + item for item in encoded)
