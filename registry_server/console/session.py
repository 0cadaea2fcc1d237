"""Who is asking: the caller of each console request, the sign-in cookie, and CSRF.

- Credentials, in order: an `Authorization: Bearer <token>` header (curl, scripts), else
  the session cookie the sign-in page set. Both go through `Access.authenticate`, the
  gRPC edge's path, so a revoked or expired token stops working here at the same moment.
  With auth off every request is the anonymous caller `console` and no sign-in exists.
- THE SESSION COOKIE HOLDS THE TOKEN AND NOTHING ELSE (HttpOnly, SameSite=Strict, Path=/,
  Secure when the request came over https): no server-side session store, so any replica
  serves it, and signing out or revoking the token ends it.
- CSRF: every state-changing request (POST) made with cookies must carry the CSRF token
  as the `csrf` form field or the `X-CSRF-Token` header, equal to the `modelreg_csrf`
  cookie (a random value, SameSite=Strict, Secure over https; double submit), and must
  not come from another origin: a `Sec-Fetch-Site` header other than `same-origin`, or an
  `Origin` header other than the request's own, is refused. Only a request with an
  `Authorization: Bearer` header is exempt: a browser never sends one by itself (a Basic
  header it may, so that one is checked like a cookie).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from registry_server.domain.access import ANONYMOUS, Caller
from registry_server.errors import PermissionDenied, Unauthenticated

SESSION_COOKIE = "modelreg_session"
CSRF_COOKIE = "modelreg_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
# The actor of a request with auth off. With auth on the principal is the actor, and
# nothing is recorded as "on behalf of" (the console speaks for no one else).
CONSOLE_ACTOR = "console"
MAX_TOKEN = 512


def _use_cases(request: Request):
    return request.app.state.use_cases


def auth_enabled(request: Request) -> bool:
    return bool(_use_cases(request).access.enabled)


async def caller_of(request: Request) -> Caller:
    """The authenticated caller; Unauthenticated when auth is on and no credential came."""
    access = _use_cases(request).access
    authorization = request.headers.get("authorization")
    if authorization is None:
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            authorization = f"Bearer {token[:MAX_TOKEN]}"
    if access.enabled and not authorization:
        raise Unauthenticated(
            "sign in first: open /signin and paste a token, or send 'Authorization: Bearer <token>' "
            '(curl -H "Authorization: Bearer $(cat .modelreg/admin.token)")'
        )
    return await access.authenticate(authorization, [], _actor(request))


def _actor(request: Request) -> str:
    return ANONYMOUS if auth_enabled(request) else CONSOLE_ACTOR


async def sign_in(request: Request, token: str) -> Caller:
    """Checks a pasted token; raises Unauthenticated with the reason."""
    token = token.strip()
    if not token:
        raise Unauthenticated("paste a token: 'modelreg tokens create' makes one; the first admin's is in admin.token")
    return await _use_cases(request).access.authenticate(f"Bearer {token[:MAX_TOKEN]}", [], _actor(request))


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def csrf_token(request: Request) -> str:
    """The request's CSRF token: the cookie's, or a fresh one that `remember_csrf` sets."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if not token:
        token = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(24)
        request.state.new_csrf = token
    return token


def remember_csrf(request: Request, response: Response) -> None:
    """Sets the CSRF cookie when this request made a fresh token."""
    token = getattr(request.state, "new_csrf", "")
    if token:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
        )


async def check_csrf(request: Request) -> dict[str, str]:
    """The form of a POST, after its CSRF check; raises PermissionDenied (403) naming the
    fix when the token is missing or wrong."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    if _bearer(request):
        return form
    _check_origin(request)
    sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD, "")
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not sent or not hmac.compare_digest(sent, expected):
        raise PermissionDenied(
            "this request lacks a valid CSRF token (a form of another site, or a stale page?); reload the page "
            "and submit again"
        )
    return form


def _bearer(request: Request) -> bool:
    """Whether the request carries `Authorization: Bearer ...`, which no browser sends unasked."""
    scheme, _, secret = request.headers.get("authorization", "").strip().partition(" ")
    return scheme.lower() == "bearer" and bool(secret.strip())


def _check_origin(request: Request) -> None:
    """Refuses a POST a browser says came from another origin (PermissionDenied, 403)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        raise PermissionDenied(
            f"this request came from another site (Sec-Fetch-Site: {site[:40]}); the console takes actions only from "
            "its own pages: open the page on this server and submit there"
        )
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin.lower() != own.lower():
        raise PermissionDenied(
            f"this request came from another origin ({origin[:200]}, not {own}); the console takes actions only "
            "from its own pages: open the page on this server and submit there"
        )
