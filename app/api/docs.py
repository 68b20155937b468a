"""The API's documentation pages, Swagger UI and ReDoc, with their scripts served by Berth.

Admins paste tokens into these pages, so nothing on them may come from another origin: the
scripts and styles ship in the `fastapi-offline` package and are served from /docs/assets, and
a Content-Security-Policy tells the browser to load nothing from elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from app.core.errors import NotFound

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = f"{DOCS_PATH}/assets"
_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
# The pages start their viewer with an inline script; ReDoc runs a worker from a blob: URL.
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The viewer's assets change only with the package; a day's caching spares reloads.
_ASSET_CACHE = "public, max-age=86400"

router = APIRouter(include_in_schema=False)


class _Document(TypedDict):
    openapi_url: str
    title: str


def _document(request: Request) -> _Document:
    """Where the page finds the OpenAPI document, under the root path the app is served at."""
    return {"openapi_url": f"{_root(request)}{request.app.openapi_url}", "title": "Berth API"}


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _guarded(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _PAGE_POLICY
    page.headers["Referrer-Policy"] = "no-referrer"
    return page


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    assets = _root(request) + ASSETS_PATH
    return _guarded(
        get_swagger_ui_html(
            **_document(request),
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # Swagger UI's default sends the document's URL to its public validator.
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get(REDOC_PATH)
async def redoc(request: Request) -> HTMLResponse:
    assets = _root(request) + ASSETS_PATH
    return _guarded(
        get_redoc_html(
            **_document(request),
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
    )


@router.get(f"{ASSETS_PATH}/{{name}}")
async def asset(name: str) -> FileResponse:
    # Only the files named above: the name never becomes a path of its own.
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no asset {name!r}")
    return FileResponse(
        _ASSETS_DIR / name, media_type=media_type, headers={"Cache-Control": _ASSET_CACHE}
    )
