"""A request body, from its bytes to its model; a body that does not fit becomes one typed error naming the field.

The error is an exception of the library's own tree, so the server answers it like any other input error: 400 and
`{"error": {"type", "code", "message", "field"}}`. Its class says what kind of field was wrong (`InvalidVectorTypeError`
for a vector that is not a list of numbers, `InvalidIdTypeError` for an id that is not a string, and so on), and
every problem inside `/v1/batch-execute` is an `InvalidBatchError` whose field starts with `operations[i]`.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from ..errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidBatchError,
    InvalidIdTypeError,
    InvalidMetadataTypeError,
    InvalidNameError,
    InvalidVectorTypeError,
    VecStoreError,
)
from .json_body import json_type, parse_json_object
from .models import OP_MODELS, BatchBody

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
# The error class for a wrong value, by the first name of the field's path.
_TYPE_ERRORS = {"vector": InvalidVectorTypeError, "id": InvalidIdTypeError, "metadata": InvalidMetadataTypeError,
                "name": InvalidNameError, "namespace": InvalidNameError, "backup_name": InvalidNameError}
_OP_NAMES = ", ".join(OP_MODELS)


def read_body(raw: bytes, model: type[BaseModel], *, empty_ok: bool = False):
    """The body ``raw`` parsed as strict JSON (see `json_body`) and validated as ``model``.

    Args:
        raw: the request body as received.
        model: its model.
        empty_ok: whether an empty body stands for `{}`.

    Raises:
        InvalidInputError: a subclass naming what is wrong, with the field's path in ``field``.
    """
    if not raw:
        if not empty_ok:
            raise InvalidArgumentError(f"this route needs a JSON body ({model.__name__})")
        raw = b"{}"
    data = parse_json_object(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise body_error(exc, model, data) from None


def body_error(exc: ValidationError, model: type[BaseModel], data) -> VecStoreError:
    """The typed error for the first problem pydantic found (the message counts the others)."""
    errors = exc.errors(include_url=False)
    # A misspelt field is both unknown and a missing one: name the field the client sent.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, VecStoreError):  # raised by a model validator: already typed and worded
        return cause
    loc = list(first["loc"])
    in_op = model is BatchBody and len(loc) >= 2 and loc[0] == "operations" and isinstance(loc[1], int)
    if in_op and len(loc) >= 3:
        del loc[2]  # the op tag pydantic puts in the path of a tagged union
    field = path_of(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(model, first["loc"])
        hint = "" if allowed is None else f" (allowed: {', '.join(allowed)})" if allowed else " (this body takes none)"
        message = f"unknown field {loc[-1]!r}{hint}"
        cls: type[VecStoreError] = InvalidArgumentError
    elif kind == "missing":
        message = f"{field!r} is required"
        cls = InvalidArgumentError
    elif kind == "union_tag_invalid":
        message = f"{field}: unknown op {first['ctx']['tag']!r} (one of: {_OP_NAMES})"
        field += ".op"
        cls = InvalidArgumentError
    elif kind == "union_tag_not_found":
        message = f"{field} needs an 'op' (one of: {_OP_NAMES})"
        field += ".op"
        cls = InvalidArgumentError
    elif kind in _EXPECTED:
        message = f"{field!r} must be {_EXPECTED[kind]}, got {json_type(first['input'])}"
        cls = _TYPE_ERRORS.get(loc[0], InvalidArgumentTypeError)  # type: ignore[arg-type]  # a str: a name
    elif kind == "too_long":
        ctx = first.get("ctx") or {}
        message = f"{field!r} holds at most {ctx.get('max_length', 0):,} items, got {ctx.get('actual_length', 0):,}"
        cls = InvalidArgumentError
    elif kind == "literal_error":
        message = f"{field!r} must be one of {first['ctx']['expected']}, got {_short(first['input'])}"
        cls = InvalidArgumentError
    else:
        message = f"{field!r}: {first['msg']}"
        cls = InvalidArgumentError
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    if model is BatchBody:
        message = f"the batch was not applied: {message}"
        cls = InvalidBatchError
    error = cls(message)
    error.field = field  # type: ignore[attr-defined]  # the HTTP error body's "field"
    return error


def path_of(loc) -> str:
    """``("operations", 2, "metadata")`` -> ``"operations[2].metadata"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: type[BaseModel], loc) -> list[str] | None:
    """The fields declared by the object that holds the unknown field at ``loc`` (a pydantic error path)."""
    if model is BatchBody and len(loc) >= 4 and loc[2] in OP_MODELS:
        model, loc = OP_MODELS[loc[2]], loc[3:]  # ("operations", i, tag, ...)
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None  # type: ignore[assignment]
        if model is None:
            return None
    return list(model.model_fields)


def _model_in(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [m for m in map(_model_in, getattr(annotation, "__args__", ())) if m is not None]
    return models[0] if len(models) == 1 else None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
