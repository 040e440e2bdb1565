"""The HTTP API's import path of old: everything lives in :mod:`vecstore_ref.server` now."""

from .server import BODY_TIMEOUT_S, DEFAULT_NAMESPACE, MAX_BODY_BYTES, TOKEN_ENV, create_app, serve
from .server.json_body import parse_json_object as parse_body

__all__ = ["create_app", "serve", "parse_body", "DEFAULT_NAMESPACE", "MAX_BODY_BYTES", "BODY_TIMEOUT_S", "TOKEN_ENV"]
