"""The OpenAPI document, generated from the routes and their pydantic models.

Each view states its body and responses with ``@doc(...)`` beside the route; its first
docstring line is the summary. ``document(app)`` walks the URL map, so a route cannot be
left out. The document is OpenAPI 3.1, whose schema objects are JSON Schema 2020-12: pydantic's
own dialect, so its schemas go in as they are (the Swagger UI 5 shipped for ``/docs`` reads 3.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from . import auth
from .dialects.mlflow import MLflowError
from .dialects.tfserving import TFServingError
from .errors import PROBLEM_JSON, dialect_of
from .oip import InferenceError
from .schemas import Problem

STANDARD_ERRORS = {
    400: "Malformed body",
    401: "No valid API key (when the server has keys)",
    403: "The API key lacks the scope this route needs",
    404: "Unknown id",
    409: "Wrong state",
    413: "Body too large",
    415: "Wrong content type",
    422: "Invalid input",
    429: "A limit was reached",
    503: "Redis unreachable",
}
DIALECT_ERRORS: dict[str, type[BaseModel]] = {"oip": InferenceError, "tfserving": TFServingError, "mlflow": MLflowError}
"""The error body on each other protocol's paths (``errors.dialect_of``)."""
BEARER = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, required on /v1 and /v2 routes once the server has keys (NNSERVE_API_KEYS "
        "or `nnserve keys create`); each operation's x-scopes lists the scopes of which the key needs one",
    }
}


def doc(
    *,
    body: type[BaseModel] | None = None,
    responses: dict[int, Any],
    errors: tuple[int, ...] = (),
    forms: dict[str, Any] | None = None,
    required_forms: tuple[str, ...] = ("file",),
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body_required: bool = True,
) -> Callable:
    """Attach the route's OpenAPI description: ``responses`` maps a status to a model, None (no
    body) or a media type string; ``errors`` lists the problem statuses it can answer besides 503
    (and 401 and 403 on the versioned API); ``query`` and ``headers`` map optional parameters to their text;
    ``body_required=False`` for a body that may be left out (all its fields have defaults)."""

    def attach(view):
        view.openapi = {
            "body": body,
            "body_required": body_required,
            "responses": responses,
            "errors": errors,
            "forms": forms,
            "required_forms": list(required_forms),
            "query": query,
            "headers": headers,
        }
        return view

    return attach


def document(app: Flask, title: str, version: str) -> dict[str, Any]:
    routes = []
    error_models: list[type[BaseModel]] = [Problem, *DIALECT_ERRORS.values()]
    keyed: set[tuple[type[BaseModel], JsonSchemaMode]] = {(model, "serialization") for model in error_models}
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        meta = getattr(view, "openapi", None)
        if meta is None:
            continue
        routes.append((rule, view, meta))
        if meta["body"] is not None:
            keyed.add((meta["body"], "validation"))
        keyed.update((m, "serialization") for m in meta["responses"].values() if isinstance(m, type))
    refs, top = models_json_schema(
        sorted(keyed, key=lambda k: k[0].__name__), ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    # A view may serve several rules (/v2's with and without a model version); operation ids must
    # stay unique, so a rule with more path arguments than the view's shortest one is named by them.
    shortest: dict[str, set[str]] = {}
    for rule, _, _ in routes:
        arguments = set(rule.arguments or ())
        shortest[rule.endpoint] = min(shortest.get(rule.endpoint, arguments), arguments, key=len)
    for rule, view, meta in sorted(routes, key=lambda item: item[0].rule):
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}):
            extra = sorted(set(rule.arguments or ()) - shortest[rule.endpoint])
            operation_id = rule.endpoint.replace(".", "_") + (f"_by_{'_'.join(extra)}" if extra else "")
            paths.setdefault(path, {})[method.lower()] = _operation(rule, method, view, meta, refs, operation_id)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": top.get("$defs", {}), "securitySchemes": BEARER},
    }


def _operation(rule, method: str, view, meta, refs, operation_id: str) -> dict[str, Any]:
    summary = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
    operation: dict[str, Any] = {"summary": summary, "operationId": operation_id, "tags": [rule.endpoint.split(".")[0]]}
    parameters = [{"name": arg, "in": "path", "required": True, "schema": {"type": "string"}} for arg in rule.arguments]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "integer"}, "description": text}
        for name, text in (meta["query"] or {}).items()
    ]
    parameters += [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": text}
        for name, text in (meta["headers"] or {}).items()
    ]
    if parameters:
        operation["parameters"] = parameters
    content = {}
    if meta["body"] is not None:
        content["application/json"] = {"schema": refs[(meta["body"], "validation")]}
    if meta["forms"]:
        content["multipart/form-data"] = {
            "schema": {"type": "object", "properties": meta["forms"], "required": meta["required_forms"]}
        }
    if content:
        operation["requestBody"] = {"required": meta.get("body_required", True), "content": content}
    responses: dict[str, Any] = {}
    for status, model in meta["responses"].items():
        if model is None:
            responses[str(status)] = {"description": "No content"}
        elif isinstance(model, str):
            media, _, description = model.partition("; ")
            schema = {"type": "string", "format": "binary"} if "octet" in media else {"type": "string"}
            responses[str(status)] = {"description": description or media, "content": {media: {"schema": schema}}}
        else:
            responses[str(status)] = {
                "description": model.__name__,
                "content": {"application/json": {"schema": refs[(model, "serialization")]}},
            }
    problem = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    error_model = DIALECT_ERRORS.get(dialect_of(rule.rule) or "")
    if error_model is not None:  # another protocol's own error form
        schema = {"$ref": f"#/components/schemas/{error_model.__name__}"}
        problem = {"content": {"application/json": {"schema": schema}}}
    protected = auth.protects(rule.rule)
    for status in sorted({*meta["errors"], 503} | ({401, 403} if protected else set())):
        responses[str(status)] = {"description": STANDARD_ERRORS[status], **problem}
    if protected:
        operation["security"] = [{"bearer": []}]
        operation["x-scopes"] = list(auth.needs(rule.endpoint, method))
    operation["responses"] = responses
    return operation
