"""`/docs` with no internet: Swagger UI served from an installed package, never from a CDN.

FastAPI's own `/docs` page loads Swagger UI from a CDN and renders blank offline. Here the page and its assets come
from this server: the script, style sheet and icon that the `fastapi-offline` package ships (installed by the
`[server]` extra; only its files are used). Swagger UI's online validator is turned off, so the page asks nothing
of any other host. Without that package, `/docs` is a plain HTML list of the routes, rendered here from the
OpenAPI schema, so it still works and still needs nothing from outside.
"""

from __future__ import annotations

import html
import importlib.resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

ASSETS_URL = "/docs/assets"
# The files /docs may serve, by the name in the URL (nothing else is ever read from disk).
_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}


def _asset_dir():
    try:
        static = importlib.resources.files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        return None
    return static if all((static / name).is_file() for name in _ASSETS) else None


def add_docs_routes(app: FastAPI, *, title: str) -> None:
    """Serve `/docs` (and its assets under `/docs/assets/`) on ``app``; none of it is in the OpenAPI schema.

    They are plain Starlette routes, which answer HEAD as they answer GET (as `/openapi.json` does)."""
    assets = _asset_dir()
    cache: dict[str, bytes] = {}

    if assets is None:
        async def route_list(request: Request) -> Response:
            return HTMLResponse(route_list_html(app.openapi(), title))

        app.add_route("/docs", route_list, methods=["GET"], include_in_schema=False)
        return

    async def swagger_ui(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{title} - API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            raise HTTPException(404)  # answered in the API's error shape, as every other 404
        if name not in cache:
            cache[name] = (assets / name).read_bytes()
        return Response(cache[name], media_type=_ASSETS[name], headers={"cache-control": "max-age=86400"})

    app.add_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_route(ASSETS_URL + "/{name}", asset, methods=["GET"], include_in_schema=False)


def route_list_html(schema: dict, title: str) -> str:
    """A self-contained page listing every route of an OpenAPI ``schema`` with its summary."""
    rows = []
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            rows.append(f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}"
                        f"</code></td><td>{html.escape(op.get('summary', ''))}</td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} - API</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>The full schema: <a href='/openapi.json'>/openapi.json</a>. "
            "Install the <code>[server]</code> extra for the interactive page.</p>"
            f"<table class='routes'><tr><th>method</th><th>path</th><th>summary</th></tr>{''.join(rows)}</table>"
            "</body></html>")
