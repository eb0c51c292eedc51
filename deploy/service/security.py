"""Who may change a served model, and the headers that keep the page from being misused.

The rules (docs/deployment.md, "Who may change a model"):
  - Host: every request names the service by one of the bound host names (127.0.0.1, localhost, ::1,
    the --host value, --allowed_hosts); any other name is refused (400), which is what a DNS-rebinding
    page sends. Bound to a wildcard address (0.0.0.0, ::) any IP literal and this machine's host name
    are accepted too.
  - Any request that is not GET/HEAD and carries an Origin other than the service's own is refused
    (403): a web page of another site can neither score images nor change a model here. A request
    without Origin is an API client (curl, a line PLC's script): browsers always send Origin on POST.
  - Changing a model (feedback, update, rollback, deleting feedback) needs the token when one is set
    (401 with WWW-Authenticate: Bearer otherwise). Without a token it needs a same-origin request:
    the header X-PatchCore-Request (a custom header: a cross-site page cannot send it without a CORS
    preflight, which this service never grants), a Referer of this origin if there is one, and a
    body that is not a "simple" form post (text/plain or application/x-www-form-urlencoded).
  - Every answer carries the CSP below, X-Content-Type-Options: nosniff, X-Frame-Options: DENY and
    Referrer-Policy: same-origin.
"""
from __future__ import annotations

import hmac
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import Match

from deploy.service.errors import ServiceError
from deploy.service.settings import ServiceSettings

CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}
PAGE_HEADER = "X-PatchCore-Request"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
# Bodies a cross-site <form> can post without a preflight; multipart is one too, but the custom header
# already rules out cross-site requests, and the page's uploads are multipart.
SIMPLE_FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded")
# An absolute file path: two parts at least (URL paths of this API, /api/... and /healthz, stay).
_SERVER_PATH = re.compile(r"(?<![\w:/.])/(?!api/)[^\s'\"(),;/]+(?:/[^\s'\"(),;]+)+")


def without_paths(text: str) -> str:
    """`text` with every absolute file path reduced to its last part (for unauthenticated readers)."""
    return _SERVER_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", text)


def host_name(header: str) -> str:
    """The name of a Host header, without port, brackets and trailing dot, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostRule:
    """The host names this service answers to (see the module doc)."""

    def __init__(self, settings: ServiceSettings):
        self.wildcard = settings.host in WILDCARDS
        names = {*LOOPBACK_NAMES, settings.host, *settings.allowed_hosts}
        if self.wildcard:
            machine = socket.gethostname()
            names |= {machine, machine.split(".")[0]}
        self.names = {host_name(n) for n in names if n}

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return name in self.names or (self.wildcard and _is_ip(name))


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else "null"


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def cross_origin(request: Request) -> str | None:
    """The foreign origin of a request (Origin, else Referer), or None when same-origin or not a browser's."""
    own = own_origin(request)
    origin = request.headers.get("origin")
    if origin is not None:
        return None if origin.lower() == own else origin
    referer = request.headers.get("referer")
    if referer and _origin_of(referer) != own:
        return _origin_of(referer)
    return None


def bearer_token(request: Request) -> str:
    given = request.headers.get("authorization", "")
    return given[7:].strip() if given.lower().startswith("bearer ") else request.headers.get("x-token", "")


def has_token(request: Request, settings: ServiceSettings) -> bool:
    return bool(settings.token) and hmac.compare_digest(bearer_token(request).encode(), settings.token.encode())


def authorize_change(request: Request, settings: ServiceSettings) -> None:
    """A call that changes a model: the token when one is set, else a same-origin request (module doc)."""
    if settings.token:
        if not has_token(request, settings):
            raise ServiceError(401, "this call needs the service token: send 'Authorization: Bearer <token>'")
        return
    foreign = cross_origin(request)
    if foreign:
        raise ServiceError(403, f"refused: a change to a model asked by another web site ({foreign}); "
                                f"use the operator page of this service")
    if not request.headers.get(PAGE_HEADER):
        raise ServiceError(403, f"refused: a change to a model needs the header '{PAGE_HEADER}' (the operator page "
                                f"sends it; API clients add it, or use --token)")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in SIMPLE_FORM_TYPES:
        raise ServiceError(415, f"refused: a change to a model is not taken from a {kind} body; send the image "
                                f"as multipart (field 'file') or with its own type (e.g. image/png)")


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path, for the Allow header of a 405 (Starlette names only the
    first route's, and /feedback, /update have a GET and a POST route)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match in (Match.PARTIAL, Match.FULL):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    """One line of JSON; every error of the service goes through here (security headers included)."""
    response = JSONResponse({"error": without_paths(message), **extra}, status_code=status, headers=headers)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="patchcore"'
    response.headers.update(SECURITY_HEADERS)
    return response


def install(app: FastAPI, settings: ServiceSettings) -> None:
    """The Host and Origin checks before any route, and the security headers on every answer."""
    hosts = HostRule(settings)

    @app.middleware("http")
    async def same_origin_only(request: Request, call_next) -> Response:
        if not hosts.allows(request.headers.get("host", "")):
            return error_response(400, f"refused: this service is not called "
                                       f"'{host_name(request.headers.get('host', ''))[:100]}' (a request for another "
                                       f"host name; serve.py --allowed_hosts adds names)")
        if request.method not in SAFE_METHODS and request.headers.get("origin") is not None:
            foreign = cross_origin(request)
            if foreign:
                return error_response(403, f"refused: a request from another web site ({foreign[:100]})")
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
