"""The sign-in and sign-out pages (auth on only): a token pasted once becomes the session
cookie (`session`); with auth off both lead home."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from registry_server.console import session
from registry_server.console.templating import render
from registry_server.errors import Unauthenticated


def _next(request: Request, form: dict[str, str] | None = None) -> str:
    target = (form or {}).get("next") or request.query_params.get("next", "/")
    # Only a path of this site: never an absolute or scheme-relative URL (open redirect).
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def signin_page(request: Request) -> Response:
    if not session.auth_enabled(request):
        return RedirectResponse("/", status_code=303)
    return render(request, "signin.html", {"next": _next(request), "error": ""})


async def signin(request: Request) -> Response:
    form = await session.check_csrf(request)
    if not session.auth_enabled(request):
        return RedirectResponse("/", status_code=303)
    token = form.get("token", "")
    try:
        await session.sign_in(request, token)
    except Unauthenticated as e:
        return render(request, "signin.html", {"next": _next(request, form), "error": e.message}, status_code=401)
    response = RedirectResponse(_next(request, form), status_code=303)
    session.set_session(response, request, token)
    return response


async def signout(request: Request) -> Response:
    await session.check_csrf(request)
    response = RedirectResponse("/signin" if session.auth_enabled(request) else "/", status_code=303)
    session.clear_session(response)
    return response


def signin_url(path: str) -> str:
    return f"/signin?next={quote(path, safe='/')}"


def routes() -> list[Route]:
    return [
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
    ]
