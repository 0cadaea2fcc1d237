"""The console's actions: promote, set the canary, promote or abort it, roll back, approve
or reject a promotion request. Each is a POST that passes the CSRF check and then calls
THE SAME USE CASE AS ITS gRPC CALL with the request's caller, so roles, gates, approvals
and the audit trail (history rows name the principal and the reason) are the gRPC API's.

A success answers a short confirmation; a refusal answers its HTTP status with the use
case's own message (a failed gate lists its checks). With htmx the answer is a fragment
swapped in beside the form; without script it is a page with a link back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry_server.console.api import model_param
from registry_server.console.session import caller_of, check_csrf
from registry_server.console.templating import render
from registry_server.domain.names import VersionRef
from registry_server.domain.stages import Stage, parse_stage
from registry_server.errors import InvalidArgument


def _int(form: dict[str, str], name: str, what: str, default: int | None = None) -> int:
    raw = form.get(name, "").strip()
    if not raw and default is not None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be {what}, not {raw!r}") from None


def done(request: Request, message: str, back: str) -> Response:
    name = "_message.html" if request.headers.get("hx-request") == "true" else "result.html"
    return render(request, name, {"ok": True, "message": message, "back": back})


async def promote(request: Request) -> Response:
    form = await check_csrf(request)
    uc = request.app.state.use_cases
    model = model_param(request)
    ref = VersionRef(model, number=_int(form, "version", "a version number"))
    stage = parse_stage(form.get("stage", ""))
    if stage == Stage.NONE:
        raise InvalidArgument("stage must be staging, production or archived")
    p = await uc.deployments.promote(await caller_of(request), ref, stage, form.get("reason", ""))
    back = f"/models/{ref.model}/versions/{p.version.version}"
    if p.request is not None:
        r = p.request
        return done(
            request,
            f"promotion request {r.id} created: v{r.version} to {r.target} needs {r.required} approval(s) "
            "from other releasers",
            back,
        )
    archived = f"; v{p.archived.version} archived" if p.archived else ""
    return done(request, f"v{p.version.version} moved to {stage.value}{archived} (event {p.sequence})", back)


async def set_canary(request: Request) -> Response:
    form = await check_csrf(request)
    uc = request.app.state.use_cases
    model = model_param(request)
    version = _int(form, "version", "a version number")
    weight = _int(form, "weight", "a percentage from 1 to 100")
    d, seq = await uc.deployments.set_canary(
        await caller_of(request), model, version, weight, form.get("reason", ""), form.get("etag", "")
    )
    return done(
        request, f"canary v{d.canary_version} at {d.canary_weight}% (event {seq})", f"/models/{model}/deployment"
    )


async def promote_canary(request: Request) -> Response:
    form = await check_csrf(request)
    uc = request.app.state.use_cases
    model = model_param(request)
    d, seq = await uc.deployments.promote_canary(
        await caller_of(request), model, form.get("reason", ""), form.get("etag", "")
    )
    return done(request, f"canary promoted: v{d.stable_version} is stable (event {seq})", f"/models/{model}/deployment")


async def abort_canary(request: Request) -> Response:
    form = await check_csrf(request)
    uc = request.app.state.use_cases
    model = model_param(request)
    d, seq = await uc.deployments.abort_canary(
        await caller_of(request), model, form.get("reason", ""), form.get("etag", "")
    )
    return done(
        request, f"canary aborted: v{d.stable_version} serves everything (event {seq})", f"/models/{model}/deployment"
    )


async def rollback(request: Request) -> Response:
    form = await check_csrf(request)
    uc = request.app.state.use_cases
    model = model_param(request)
    to_version = _int(form, "to_version", "a version number, or empty for the previous production version", 0)
    d, seq = await uc.deployments.rollback(
        await caller_of(request), model, to_version, form.get("reason", ""), form.get("etag", "")
    )
    return done(request, f"rolled back: v{d.stable_version} is production (event {seq})", f"/models/{model}/deployment")


async def _decide(request: Request, approve: bool) -> Response:
    form = await check_csrf(request)
    uc = request.app.state.use_cases
    model = model_param(request)
    version = _int(form, "version", "a version number")
    target = form.get("target", "")
    r, moved, seq = await uc.gates.decide(
        await caller_of(request), model, version, target, form.get("reason", ""), approve=approve
    )
    back = f"/models/{model}/deployment"
    if not approve:
        return done(request, f"request {r.id} rejected (event {seq})", back)
    if moved is None:
        return done(request, f"approved; request {r.id} needs {r.required - len(set(r.approvers))} more", back)
    return done(request, f"request {r.id} approved: v{moved.version} moved to {r.target} (event {seq})", back)


async def approve(request: Request) -> Response:
    return await _decide(request, True)


async def reject(request: Request) -> Response:
    return await _decide(request, False)


def routes() -> list[Route]:
    table: list[tuple[str, Callable[[Request], Awaitable[Response]]]] = [
        ("/models/{model}/promote", promote),
        ("/models/{model}/deployment/canary", set_canary),
        ("/models/{model}/deployment/promote-canary", promote_canary),
        ("/models/{model}/deployment/abort-canary", abort_canary),
        ("/models/{model}/deployment/rollback", rollback),
        ("/models/{model}/requests/approve", approve),
        ("/models/{model}/requests/reject", reject),
    ]
    return [Route(path, fn, methods=["POST"]) for path, fn in table]
