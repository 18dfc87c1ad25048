"""The OpenAPI 3.1 schema `zerograd serve` answers at /openapi.json, written out by hand: five
routes do not need a framework to describe them, and the schema names the served run's own
classes, columns and limits."""
from __future__ import annotations

from typing import Any

from zerograd.predictor import Predictor


def openapi_schema(predictor: Predictor, limits: dict[str, int]) -> dict[str, Any]:
    name = predictor.run_dir.name if predictor.run_dir else "model"
    error = {"description": "what was wrong, in one line", "content": _json({"$ref": "#/components/schemas/Error"})}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"zerograd serve: {name}", "version": "1",
                 "description": f"Predictions of the run {name} ({predictor.kind} inputs, {predictor.task})."},
        "paths": {
            "/": {"get": {"summary": "The draw-a-digit page (a note on the API for runs that take no images)",
                          "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
            "/info": {"get": {"summary": "The run: task, class names, input shape, columns, limits",
                              "responses": {"200": {"description": "the run",
                                                    "content": _json({"$ref": "#/components/schemas/Info"})}}}},
            "/health": {"get": {"summary": "Whether the server answers",
                                "responses": {"200": {"description": "it does", "content": _json(
                                    {"type": "object", "properties": {"ok": {"const": True}}, "required": ["ok"]})}}}},
            "/openapi.json": {"get": {"summary": "This schema",
                                      "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({})}}}},
            "/predict": {"post": {
                "summary": "Predict",
                "description": _predict_description(predictor, limits),
                "requestBody": {"required": True, "content": _request_bodies(predictor, limits)},
                "responses": {
                    "200": {"description": "one prediction for one uploaded image; a list, in order, for JSON requests",
                            "content": _json({"oneOf": [{"$ref": "#/components/schemas/Prediction"},
                                                        {"type": "array",
                                                         "items": {"$ref": "#/components/schemas/Prediction"}}]})},
                    "400": error, "411": error, "413": error, "415": error, "500": error,
                    "503": {"description": "busy: too many predictions at once; retry after Retry-After seconds",
                            "content": _json({"$ref": "#/components/schemas/Error"})},
                },
            }},
        },
        "components": {"schemas": {
            "Prediction": {"type": "object", "required": ["label", "top"], "properties": {
                "label": {"description": "the most likely class (classification) or the predicted value(s) "
                                         "(regression)"},
                "probability": {"type": "number", "description": "of the label (classification only)"},
                "top": {"type": "array", "items": {"type": "object", "properties": {
                    "label": _labels(predictor), "probability": {"type": "number"}}}},
                "output": {"type": "array", "items": {"type": "number"},
                           "description": "the model's outputs (regression)"}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Info": {"type": "object", "properties": {
                "run": {"type": "string"}, "kind": {"enum": ["image", "table", "tensor"]}, "task": {"type": "string"},
                "class_names": {"type": ["array", "null"], "items": {"type": "string"}},
                "input_shape": {"type": "array", "items": {"type": "integer"}},
                "columns": {"type": "array", "items": {"type": "string"}},
                "style": {"type": ["string", "null"]}, "top": {"type": "integer"},
                "limits": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        }},
    }


def _request_bodies(predictor: Predictor, limits: dict[str, int]) -> dict[str, Any]:
    if predictor.kind == "image":
        return {
            "image/*": {"schema": {"type": "string", "format": "binary", "maxLength": limits["max_bytes"]}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                    "maxLength": limits["max_bytes"]}},
            "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {"images": {
                "type": "array", "minItems": 1, "maxItems": limits["max_images"],
                "items": {"type": "string", "description": "an image file in base64 (a data: URL too)"}}}}},
        }
    if predictor.kind == "table":
        columns = [c.get("name") for c in predictor.preprocessing.get("columns") or [] if isinstance(c, dict)]
        row = {"oneOf": [{"type": "object",
                          "properties": {str(c): {"type": ["number", "string", "null"]} for c in columns},
                          "required": [str(c) for c in columns]},
                         {"type": "array", "description": f"values in column order: {', '.join(map(str, columns))}"}]}
        rows = {"type": "array", "minItems": 1, "maxItems": limits["max_rows"], "items": row}
        return {"application/json": {"schema": {"oneOf": [
            {"type": "object", "required": ["rows"], "properties": {"rows": rows}}, rows]}}}
    inputs = {"type": "array", "minItems": 1, "maxItems": limits["max_rows"],
              "description": f"model-ready inputs of shape {predictor.input_shape} (one, or a list of them)"}
    return {"application/json": {"schema": {"oneOf": [{"type": "object", "required": ["inputs"],
                                                       "properties": {"inputs": inputs}}, inputs]}}}


def _predict_description(predictor: Predictor, limits: dict[str, int]) -> str:
    if predictor.kind == "image":
        return (f"The body is one image file (PNG, JPEG, ...; at most {limits['max_bytes']:,} bytes and "
                f"{limits['max_pixels']:,} pixels decoded), answered with one prediction; or JSON "
                f'{{"images": [base64, ...]}} (at most {limits["max_images"]}), answered with a list.')
    if predictor.kind == "table":
        return (f'JSON {{"rows": [{{column: value, ...}}, ...]}} (or the bare list; at most {limits["max_rows"]:,} '
                'rows), '
                "answered with a list of predictions in the same order.")
    return 'JSON {"inputs": [...]}: model-ready numbers, answered with a list of predictions.'


def _labels(predictor: Predictor) -> dict[str, Any]:
    return {"enum": list(predictor.class_names)} if predictor.class_names else {"type": "string"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
