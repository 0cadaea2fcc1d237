"""Jinja2 templates (autoescaped) and the helpers every page gets: the caller, whether auth
is on, the CSRF token, and formatting filters."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from registry_server.console.session import csrf_token, remember_csrf

TEMPLATES = Path(__file__).parent / "templates"


def size(n: int | float | None) -> str:
    """Bytes for people: 512 B, 12.3 KiB, 4.0 MiB."""
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def number(value: Any) -> str:
    """A metric: up to 4 significant decimals, integers as integers, '' for none."""
    if value is None or value == "":
        return ""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.4g}"


def signed(value: float | None) -> str:
    if value is None:
        return ""
    return ("+" if value > 0 else "") + number(value)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def tojson_attr(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.filters.update(size=size, number=number, signed=signed, when=when, compact=tojson_attr)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    base = {
        "auth_enabled": request.app.state.use_cases.access.enabled,
        "csrf": csrf_token(request),
        "principal": getattr(request.state, "principal", ""),
        "fragment": request.headers.get("hx-request") == "true",
        "after": getattr(request.state, "after", ""),
    }
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)
    remember_csrf(request, response)
    return response
