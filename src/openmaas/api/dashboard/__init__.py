"""The web dashboard at `/` and the API's own docs at `/docs` and `/redoc`, all from files on this host.

The dashboard's pages and scripts are ours (static/); the libraries are served from the Python packages that
installed them: plotly.js from the `plotly` wheel, Swagger UI and ReDoc from `fastapi-offline`. The pages call
the public API with the user's key like any client: this module serves files and nothing else.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from openmaas.errors import NotFound

STATIC = Path(__file__).parent / "static"
# Nothing may load from another origin. Plotly sets style attributes on the elements it draws, hence the
# inline styles; scripts only from files of this origin (no inline script, no eval).
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# FastAPI's docs pages start their library with an inline script; ReDoc renders in a worker made from a blob.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _package_dir(package: str) -> Path | None:
    """Where an installed package lies, found without importing it (plotly's import is slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def vendor_files() -> dict[str, Path]:
    """The third-party files the pages load, by the name they are served under, from their packages."""
    files: dict[str, Path] = {}
    if (plotly := _package_dir("plotly")) is not None:
        files["plotly.min.js"] = plotly / "package_data" / "plotly.min.js"
    if (offline := _package_dir("fastapi_offline")) is not None:
        for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
            files[name] = offline / "static" / name
    return {name: path for name, path in files.items() if path.is_file()}


def dashboard_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    vendor = vendor_files()

    @router.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={**PAGE_HEADERS, "Content-Security-Policy": DASHBOARD_CSP})

    @router.get("/dashboard/vendor/{name}")
    async def vendor_file(name: str) -> FileResponse:
        if name not in vendor:
            raise NotFound(f"no file {name!r} here: is its package installed?", param="name")
        # The packages' files change only with an upgrade, which restarts the server.
        return FileResponse(vendor[name], headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="OpenMaaS API",
            swagger_js_url="/dashboard/vendor/swagger-ui-bundle.js",
            swagger_css_url="/dashboard/vendor/swagger-ui.css",
            swagger_favicon_url="/dashboard/vendor/favicon.png",
        )
        page.headers.update({**PAGE_HEADERS, "Content-Security-Policy": DOCS_CSP})
        return page

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title="OpenMaaS API",
            redoc_js_url="/dashboard/vendor/redoc.standalone.js",
            redoc_favicon_url="/dashboard/vendor/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update({**PAGE_HEADERS, "Content-Security-Policy": DOCS_CSP})
        return page

    return router


def install_dashboard(app: FastAPI) -> None:
    """Mount the pages, their scripts and the docs on `app` (created with docs_url=None, redoc_url=None)."""
    app.include_router(dashboard_router())
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
