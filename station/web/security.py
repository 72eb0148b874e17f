"""Who may use the operator page and its API, checked on every request before any route runs.

- **Loopback by default.** Bound to a loopback address (127.0.0.0/8, ::1, localhost), the page
  needs no token: only this machine reaches it. The `Host` header must then name a loopback
  address or `localhost`, so a web page elsewhere cannot reach the station through DNS
  rebinding (its requests carry its own host name).
- **Any other address requires a token** on every request, the page and the event stream
  included: the `STATION_SERVE_TOKEN` environment variable, else one generated at start and
  printed with the page's address. A browser opens `http://host:port/?token=...` once; the page
  answers with an HttpOnly, SameSite=Strict cookie and a redirect to the address without the
  token, so the token leaves the address bar (and no Referer carries it). Automation sends
  `Authorization: Bearer <token>` instead.
- **State-changing requests are CSRF-safe**: every request other than GET and HEAD must carry
  the header `X-Station-CSRF: 1` and, when it has a body, `Content-Type: application/json`.
  A page on another site cannot send a custom header without a CORS preflight, which this
  server never grants, and an HTML form can send neither. A request whose `Origin` is not this
  server is refused too.
- Every response carries a strict Content-Security-Policy (only this server's own scripts,
  styles and images), `nosniff`, `no-referrer` and no caching of API answers.

Refusals are JSON `{"error": "..."}` with 400 (bad Host), 401 (no or a wrong token) or 403
(CSRF), and never echo a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "TOKEN_ENV",
    "Guard",
    "GuardMiddleware",
    "is_loopback",
    "new_token",
]

TOKEN_ENV = "STATION_SERVE_TOKEN"
COOKIE_NAME = "station_token"
CSRF_HEADER = "x-station-csrf"
MIN_TOKEN_LENGTH = 16  # a shorter token from the environment is refused at start
SAFE_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name to bind or a Host header's name) is this machine only."""
    name = host.strip().lower().strip("[]")
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random token: 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Guard:
    """The rules for one server: `token` None means none is required (a loopback bind)."""

    bind_host: str
    token: str | None

    @property
    def check_host(self) -> bool:
        """On loopback the Host header must be a loopback name (DNS rebinding)."""
        return is_loopback(self.bind_host)

    def token_matches(self, candidate: str | None) -> bool:
        if self.token is None:
            return True
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())


def _host_name(host_header: str) -> str:
    """The name part of a Host header value (`[::1]:8080` -> `::1`, `a:80` -> `a`)."""
    value = host_header.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    name, _, _port = value.partition(":") if value.count(":") == 1 else (value, "", "")
    return name


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name (the last one wins; latin-1 as HTTP says)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _cookie(headers: dict[str, str]) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no token, never a crash
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


class GuardMiddleware:
    """ASGI middleware enforcing a `Guard` on every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        method = scope["method"].upper()
        refusal = self._refusal(scope, headers, method)
        if refusal is not None:
            status, message, extra = refusal
            await _send_json(send, status, {"error": message}, extra)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if self.guard.token is not None and "token" in query and scope["path"] == "/":
            # The token came in the address: keep it in a cookie and take it out of the address.
            rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
            location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
            cookie = (
                f"{COOKIE_NAME}={self.guard.token}; HttpOnly; SameSite=Strict; Path=/"
            ).encode("latin-1")
            await _send_json(
                send,
                303,
                {"redirect": location},
                [(b"location", location.encode("latin-1")), (b"set-cookie", cookie)],
            )
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if scope["path"].startswith("/api/") and b"cache-control" not in present:
                    added.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(
        self, scope: Scope, headers: dict[str, str], method: str
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """(status, message, extra headers) when the request must be refused, else None."""
        guard = self.guard
        host = headers.get("host", "")
        if guard.check_host and not is_loopback(_host_name(host)):
            return (
                400,
                "this station serves loopback only: open it as 127.0.0.1 or localhost "
                "(the Host header named another host)",
                [],
            )
        if guard.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            offered = [_bearer(headers), _cookie(headers), query.get("token")]
            if not any(guard.token_matches(t) for t in offered if t):
                return (
                    401,
                    "a token is required: open the address `station serve` printed (with "
                    "?token=...), or send the header Authorization: Bearer <token>",
                    [(b"www-authenticate", b'Bearer realm="station"')],
                )
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and not _same_origin(origin, host):
                return (403, f"cross-site request refused (Origin {origin[:100]})", [])
            if headers.get(CSRF_HEADER) != "1":
                return (
                    403,
                    "state-changing requests need the header X-Station-CSRF: 1 "
                    "(it keeps other web pages from acting on this station)",
                    [],
                )
            if _has_body(headers) and not _is_json(headers.get("content-type", "")):
                return (403, "send the request body as Content-Type: application/json", [])
        return None


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


def _has_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length", "").strip()
    return "transfer-encoding" in headers or (length not in ("", "0"))


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


async def _send_json(
    send: Send, status: int, body: object, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
                *SECURITY_HEADERS,
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
