"""The web page: one static page (HTML, CSS, plain JavaScript) shipped in the package."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The only files served, with their content types: nothing else in the folder is reachable.
ASSETS = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}
# The page loads nothing but its own files and calls nothing but this server.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
def index_page() -> FileResponse:
    """Ask questions and check every citation against its source."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS
    )


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
def asset(name: str) -> FileResponse:
    """The page's stylesheet and script."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=HEADERS)


# Swagger UI from the assets a PyPI package ships, never from a CDN: the docs page works
# offline like everything else groundqa serves. (No ReDoc: its page loads a logo from a CDN.)
DOCS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def _docs_asset_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/docs/assets/{name}"


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Interactive OpenAPI documentation (Swagger UI)."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="groundqa - Swagger UI",
        swagger_js_url=_docs_asset_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=_docs_asset_url(request, "swagger-ui.css"),
        swagger_favicon_url=_docs_asset_url(request, "favicon.png"),
        # The default validator badge calls validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> FileResponse:
    """A script, stylesheet or icon of the documentation pages."""
    media_type = DOCS_ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no documentation asset {name!r}")
    return FileResponse(DOCS_DIR / name, media_type=media_type)
