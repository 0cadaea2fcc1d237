"""The console's Starlette app: routes, static files, and the error handling of every
route, a bug's included (`errors.http_error` decides the status; this module only chooses
JSON for /api/ and /events/stream, a redirect to sign in for a page without a session, or
an HTML page)."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from registry_server.console import actions, api, download, pages, signin, sse
from registry_server.console.deps import UseCases
from registry_server.console.errors import HANDLED, HttpError, http_error, not_found
from registry_server.console.templating import render
from registry_server.errors import Unauthenticated

STATIC = Path(__file__).parent / "static"


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/events/stream"


def respond(request: Request, err: HttpError) -> Response:
    if _wants_json(request):
        return JSONResponse(err.body(), status_code=err.code)
    if request.headers.get("hx-request") == "true":
        context = {"ok": False, "message": err.message, "violations": err.violations}
        return render(request, "_message.html", context, status_code=err.code)
    return render(request, "error.html", {"error": err}, status_code=err.code)


async def on_registry_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Unauthenticated) and request.method == "GET" and not _wants_json(request):
        if "authorization" not in request.headers:
            return RedirectResponse(
                signin.signin_url(request.url.path + (f"?{request.url.query}" if request.url.query else "")), 303
            )
    return respond(request, http_error(exc))


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return respond(request, not_found(request.url.path))
    return respond(request, HttpError(exc.status_code, "INVALID_ARGUMENT", str(exc.detail)))


def create_app(use_cases: UseCases) -> Starlette:
    routes = [
        *api.routes(),
        *sse.routes(),
        *signin.routes(),
        *actions.routes(),
        *download.routes(),
        *pages.routes(),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    handlers: dict = {HTTPException: on_http_exception}
    for cls in HANDLED:
        handlers[cls] = on_registry_error
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.use_cases = use_cases
    return app
