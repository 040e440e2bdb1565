"""The HTTP API (SPEC section 8), in the optional `[server]` extra: `vecstore-ref serve --data ./data`.

- `app`: the FastAPI app, its routes, where each call runs (`reads_run_inline`), and `serve()`;
- `models`: every request body, every answer and the error shape, as pydantic models (what `/openapi.json` shows);
- `bodies`: a request body from bytes to its model, and a misfit to a typed error naming the field;
- `json_body`: the strict JSON parser and the encoder of every answer;
- `guard`: token, body size, body timeout and content type, checked before routing;
- `docs_page`: `/docs`, served with no internet.

The guide is docs/guide/http.md.
"""

from .app import (
           BODY_TIMEOUT_S,
           DEFAULT_NAMESPACE,
           MAX_BODY_BYTES,
           TOKEN_ENV,
           create_app,
           reads_run_inline,
           serve,
)

__all__ = ["create_app", "serve", "reads_run_inline", "DEFAULT_NAMESPACE", "MAX_BODY_BYTES", "BODY_TIMEOUT_S",
           "TOKEN_ENV"]
