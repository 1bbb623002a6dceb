"""HTTP hardening around the app: request size limits, security headers, CORS only where the site
asks for it, an Allow header that lists every method of a path, and no stack trace in any response.

Pure ASGI middleware (no `BaseHTTPMiddleware`): streamed responses (the CSV export, the panel's event
stream) pass through untouched apart from their headers.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.site import ApiSettings, Site

log = logging.getLogger(__name__)

ID_MAX = 2**63 - 1  # ids are 64-bit columns (controller/store/tables.py)

# The panel and the API: scripts and styles from this origin only (the panel has no inline script,
# style or event handler), no frames, no plugins, no <base> games, forms post here only.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


def docs_csp(nonce: str) -> str:
    """/docs and /redoc: Swagger UI starts from one inline script (allowed by this response's nonce
    only); both inject their own styles, ReDoc searches in a worker it makes from a blob."""
    return (f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; font-src 'self'; worker-src 'self' blob:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,  # a response that sets its own (the docs pages) keeps it
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class HttpLimits:
    """The site file's `api` hardening keys (controller/site.py, ApiSettings)."""

    max_body_bytes: int
    max_batch: int
    cors_origins: tuple[str, ...] = ()
    open_paths: tuple[str, ...] = ()  # answered without credentials (the gate's; for the schema)

    @classmethod
    def of(cls, site: Site | None) -> HttpLimits:
        """From a site file's `api` section; its defaults without a site."""
        api = site.api if site is not None else ApiSettings()
        return cls(max_body_bytes=api.max_body_bytes, max_batch=api.max_batch,
                   cors_origins=tuple(api.cors_origins), open_paths=tuple(api.open_paths))


def install(app: FastAPI, limits: HttpLimits) -> None:
    """Everything of this module on `app`. Call after the routes are included."""
    app.state.limits = limits
    app.add_exception_handler(405, _method_not_allowed)
    app.add_middleware(InternalErrors)  # innermost of these: its 500 gets the headers below
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if limits.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(limits.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Actor"], max_age=600)
    app.add_middleware(SecurityHeaders)  # outermost: every answer has them, 413s and 500s too
    _document_limits(app, limits.max_batch, limits.open_paths)


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every HTTP response that does not set the header itself."""

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = _raw_headers(headers or SECURITY_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body too large: at most {max_bytes} bytes")


class BodyLimit:
    """413 for a body over `max_bytes`: at once when Content-Length says so, else as soon as the
    bytes received pass the limit (a chunked upload), before the app has parsed any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self.too_large(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body", False):
                        await drain(receive)
                    raise BodyTooLarge(self.max_bytes)  # the route's body reading answers it as a 413
            return message

        await self.app(scope, counted, send)

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await drain(receive)
        response = JSONResponse({"detail": f"request body too large: at most {self.max_bytes} bytes"},
                                status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


# A client that sends its whole body before it reads the answer sees a reset connection, not the 413,
# when the server closes early: the rest of the body is read and dropped (never parsed) up to this.
DRAIN_MAX_BYTES = 32 << 20


async def drain(receive: Receive, limit: int = DRAIN_MAX_BYTES) -> None:
    read = 0
    while read <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class InternalErrors:
    """An exception no handler took: logged with its traceback under a short id, answered as a plain
    500 `{"detail": "internal error", "id": ...}` (the id finds the log line; nothing of the trace
    goes out). A response already under way is cut off instead: its status has gone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:  # mid-stream, most often a client that went away: the server logs it
                raise
            error_id = uuid.uuid4().hex[:12]
            log.exception("internal error %s: %s %s", error_id, scope.get("method"), scope.get("path"))
            response = JSONResponse({"detail": "internal error", "id": error_id}, status_code=500)
            await response(scope, receive, send)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """Starlette's 405 names the methods of the first route whose path matched; a path served by
    several routes (GET and POST /api/orders) gets them all in `Allow`, as the schema lists them."""
    given = (getattr(exc, "headers", None) or {}).get("Allow", "")
    methods = {m.strip() for m in given.split(",") if m.strip()}
    methods |= set(_documented_methods(request.app.openapi(), request.url.path))
    detail = getattr(exc, "detail", "Method Not Allowed")
    return JSONResponse({"detail": detail}, status_code=405, headers={"Allow": ", ".join(sorted(methods))})


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _documented_methods(schema: dict[str, Any], path: str) -> Iterable[str]:
    for template, operations in schema.get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            for method in operations:
                if method in HTTP_METHODS:
                    yield method.upper()
                    if method == "get":
                        yield "HEAD"


BODY_ERRORS: dict[str, dict[str, str]] = {
    "400": {"description": "the body is not JSON in UTF-8"},
    "413": {"description": "the body is larger than the site's api.max_body_bytes"},
}

AUTH_ERRORS: dict[str, dict[str, str]] = {
    "401": {"description": "no credentials, or bad ones (unknown, expired or revoked token; ended session)"},
    "403": {"description": "the role or the token's scopes do not allow this, or a session's CSRF token is "
                           "missing"},
}


def _document_limits(app: FastAPI, max_batch: int, open_paths: Iterable[str] = ()) -> None:
    """The OpenAPI schema says what this app takes: every operation with a body may answer 400 (not
    JSON at all) and 413 (too large), every operation behind the gate 401 and 403, and the list
    form of POST /api/orders has `maxItems` = the site's max_batch. A path the site file opens
    (`api.open_paths`) needs no credentials, and says so."""
    opened = set(open_paths)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for route, path in schema.get("paths", {}).items():
            for operation in path.values():
                if not isinstance(operation, dict):
                    continue
                if route in opened:
                    operation.pop("security", None)
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation:
                    for status, text in BODY_ERRORS.items():
                        responses.setdefault(status, text)
                if operation.get("security"):  # the gate's answers (controller/api/auth.py)
                    for status, text in AUTH_ERRORS.items():
                        responses.setdefault(status, text)
        body = (schema.get("paths", {}).get("/api/orders", {}).get("post", {}).get("requestBody", {})
                .get("content", {}).get("application/json", {}).get("schema", {}))
        for branch in body.get("oneOf", []):
            if branch.get("type") == "array":
                branch["maxItems"] = max_batch
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def with_nonce(page: HTMLResponse) -> HTMLResponse:
    """A docs page whose inline scripts run under this response's own nonce, and no other inline
    script: the page's CSP names the nonce."""
    nonce = new_nonce()
    body = bytes(page.body).replace(b"<script>", f'<script nonce="{nonce}">'.encode())
    return HTMLResponse(body, status_code=page.status_code,
                        headers={"Content-Security-Policy": docs_csp(nonce)})


def utf8_safe(value: Any) -> Any:
    """`value` with every string made encodable as UTF-8: a lone surrogate sent as "\\ud800" in JSON
    comes back in a 422's `input` as the text \\ud800, not as a 500 from the response encoder."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {utf8_safe(k): utf8_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [utf8_safe(v) for v in value]
    return value


def too_many_orders(count: int, max_batch: int) -> dict[str, Any]:
    """The 422 entry of a batch over the limit, in pydantic's own words (the input is left out: it
    is the whole batch)."""
    return {"type": "too_long", "loc": ["body", "orders"],
            "msg": f"List should have at most {max_batch} items after validation, not {count}",
            "ctx": {"field_type": "List", "max_length": max_batch, "actual_length": count}}
