"""The HTML pages: Models, Model, Version, Deployment, Events. Server-rendered tables that
work before any script runs; console.js adds live refresh and charts on top.

Each page reads through the same use cases as the gRPC API with the request's `Caller`,
so it shows only what the caller may read; its actions appear only where
`Identity.check_access` (AuthService.CheckAccess) says the caller may take them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry_server.console import views
from registry_server.console.api import int_param, model_param, version_ref
from registry_server.console.session import caller_of
from registry_server.console.templating import number, render
from registry_server.domain import models as dm
from registry_server.domain.access import Caller
from registry_server.domain.names import VersionRef
from registry_server.errors import InvalidArgument, NotFound
from registry_server.services import convert as cv

MODELS_PAGE = 25
VERSIONS_PAGE = 50
SEARCH_BATCH = 200
DEFAULT_CURVES = 5  # versions the curves chart shows when none is selected
ACTIONS = ("promote", "canary", "rollback", "approve")
EVENTS_SHOWN = 100


async def allowed_actions(request: Request, caller: Caller, model: str) -> dict[str, bool]:
    """Which actions the caller may take on `model` (CheckAccess's answer per verb)."""
    identity = request.app.state.use_cases.identity
    out = {}
    for verb in ACTIONS:
        out[verb] = (await identity.check_access(caller, verb, f"models/{model}", "")).allowed
    return out


async def _caller(request: Request) -> Caller:
    """The caller, and the event sequence the page is at least as new as (read first, so
    the live stream resumes after it and misses nothing committed while the page renders)."""
    request.state.after = request.app.state.use_cases.events.hub.last_seen
    caller = await caller_of(request)
    request.state.principal = caller.principal if caller.authenticated else ""
    return caller


# ---------------------------------------------------------------------- Models


async def models_page(request: Request) -> Response:
    uc = request.app.state.use_cases
    caller = await _caller(request)
    query = request.query_params.get("q", "").strip()
    after = cv.decode_token("models", request.query_params.get("page_token", "")) or ""
    found: list[dm.Model] = []
    more = False
    while True:
        batch = await uc.models.list_models(caller, after, SEARCH_BATCH if query else MODELS_PAGE + 1)
        for m in batch:
            if not query or views.matches(m, query):
                found.append(m)
        if len(found) > MODELS_PAGE:
            more = True
            break
        if not query or len(batch) < SEARCH_BATCH:
            break
        after = batch[-1].name
    found = found[:MODELS_PAGE]
    deployments = await uc.deployments.get_many(caller, [m.name for m in found])  # one query, not one a row
    rows = []
    for m in found:
        d = deployments[m.name]
        production = None
        if m.production_version:
            with contextlib.suppress(NotFound):
                production = await uc.models.resolve(caller, VersionRef(m.name, number=m.production_version))
        key = views.key_metric(m, production)
        rows.append(
            {
                "model": m,
                "deployment": d,
                "key_metric": key,
                "key_value": production.metrics.get(key) if production and key else None,
            }
        )
    token = cv.encode_token("models", found[-1].name) if more and found else ""
    return render(request, "models.html", {"rows": rows, "query": query, "next_page_token": token})


# ---------------------------------------------------------------------- Model


def _selected(request: Request) -> list[int]:
    out: list[int] = []
    for raw in request.query_params.getlist("v"):
        if not raw.isdigit() or int(raw) < 1:
            raise InvalidArgument(f"v={raw!r} is not a version number; select versions by their numbers")
        if int(raw) not in out:
            out.append(int(raw))
    return out


def _metric_cells(v: dm.ModelVersion, keys: list[str], best: dict[str, float]) -> Markup:
    """A row's metric cells as HTML (keys escaped; the values are formatted numbers)."""
    out = []
    for k in keys:
        x = v.metrics.get(k)
        css = "num best" if x is not None and best.get(k) == x else "num"
        out.append(f'<td class="{css}" data-key="{escape(k)}">{number(x)}</td>')
    return Markup("".join(out))


async def model_page(request: Request) -> Response:
    uc = request.app.state.use_cases
    caller = await _caller(request)
    name = model_param(request)
    model = await uc.models.get_model(caller, name)
    size = cv.page_size(int_param(request, "page_size") or VERSIONS_PAGE)
    page_token = request.query_params.get("page_token", "")
    before = cv.decode_int_token("versions", page_token, 2**62)
    versions = await uc.models.list_versions(caller, name, None, before, size + 1)
    token = cv.encode_token("versions", versions[size - 1].version) if len(versions) > size else ""
    versions = versions[:size]
    sort = request.query_params.get("sort", "version")
    descending = request.query_params.get("dir", "desc") != "asc"
    shown = views.sort_versions(versions, sort, descending)
    keys = views.metric_keys(versions)
    best = views.best_values(versions, keys)
    selected = _selected(request)
    comparison = None
    if len(selected) >= 2:
        comparison = await uc.models.compare(caller, name, selected)
    by_number = {v.version: v for v in versions}
    if comparison is not None:  # it has every selected version already
        for v in comparison.versions:
            by_number.setdefault(v.version, v)
    for n in selected:
        if n not in by_number:  # one version selected, off this page
            by_number[n] = await uc.models.resolve(caller, VersionRef(name, number=n))
    chart_versions = [by_number[n] for n in selected] if selected else versions[:DEFAULT_CURVES]
    curve_keys = views.history_keys(chart_versions)
    curve_metric = request.query_params.get("curve", "") or (curve_keys[0] if curve_keys else "")
    production = by_number.get(model.production_version)
    key = request.query_params.get("metric", "") or views.key_metric(
        model, production or (versions[0] if versions else None)
    )
    deployment = await uc.deployments.get(caller, name)
    # The metric cells, formatted here: 50 rows x N keys is the page's bulk, and a Jinja
    # expression per cell costs more than the rest of the page.
    rows = [(v, _metric_cells(v, keys, best)) for v in shown]
    context: dict[str, Any] = {
        "model": model,
        "versions": shown,
        "rows": rows,
        "keys": keys,
        "lower_is_better": {k: views.lower_is_better(k) for k in keys},
        "selected": selected,
        "comparison": comparison,
        "compare_rows": views.compare_rows(comparison) if comparison else [],
        "curve_keys": curve_keys,
        "curves": views.curves(chart_versions, curve_metric) if curve_metric else None,
        "curves_default": not selected,
        "key_metric": key,
        "by_version": views.by_version(versions, key) if key else None,
        "sort": sort,
        "descending": descending,
        "next_page_token": token,
        "page_token": page_token,
        "deployment": deployment,
        "can": await allowed_actions(request, caller, name),
    }
    return render(request, "model.html", context)


# ---------------------------------------------------------------------- Version


async def version_page(request: Request) -> Response:
    uc = request.app.state.use_cases
    caller = await _caller(request)
    ref = version_ref(request)
    version = await uc.models.resolve(caller, ref)
    model = await uc.models.get_model(caller, ref.model)
    parent = None
    if version.lineage.parent_version:
        with contextlib.suppress(NotFound):
            parent = await uc.models.resolve(caller, VersionRef(ref.model, number=version.lineage.parent_version))
    card = None
    with contextlib.suppress(NotFound):
        card = await uc.cards.get(caller, VersionRef(ref.model, number=version.version))
    transitions = [
        t for _, t in await uc.deployments.transitions(caller, ref.model, 2**62, 1000) if t.version == version.version
    ]
    context = {
        "model": model,
        "version": version,
        "parent": parent,
        "vs_default": views.config_diff(model.default_config, version.config),
        "vs_parent": views.config_diff(parent.config, version.config) if parent else [],
        "card": card,
        "transitions": transitions,
        "can": await allowed_actions(request, caller, ref.model),
    }
    return render(request, "version.html", context)


# ---------------------------------------------------------------------- Deployment


async def deployment_page(request: Request) -> Response:
    uc = request.app.state.use_cases
    caller = await _caller(request)
    name = model_param(request)
    model = await uc.models.get_model(caller, name)
    rollout = await uc.agents.rollout(caller, name)
    history = [h for _, h in await uc.deployments.history(caller, name, 2**62, 50)]
    requests = await uc.gates.list_requests(caller, name, "pending", 2**62, 50)
    versions = await uc.models.list_versions(caller, name, None, 2**62, 100)
    context = {
        "model": model,
        "deployment": rollout.deployment,
        "rollout": rollout,
        "history": history,
        "requests": requests,
        "versions": versions,
        "can": await allowed_actions(request, caller, name),
    }
    return render(request, "deployment.html", context)


# ---------------------------------------------------------------------- Events


async def events_page(request: Request) -> Response:
    uc = request.app.state.use_cases
    caller = await _caller(request)
    latest = uc.events.hub.last_seen
    rows = await uc.events.list(caller, max(0, latest - EVENTS_SHOWN), EVENTS_SHOWN, [], [])
    return render(request, "events.html", {"events": list(reversed(rows)), "latest": latest})


def routes() -> list[Route]:
    return [
        Route("/", models_page, methods=["GET"]),
        Route("/events", events_page, methods=["GET"]),
        Route("/models/{model}", model_page, methods=["GET"]),
        Route("/models/{model}/versions/{version}", version_page, methods=["GET"]),
        Route("/models/{model}/deployment", deployment_page, methods=["GET"]),
    ]
