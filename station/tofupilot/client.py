"""A small httpx client for the TofuPilot v2 endpoints a station uses (and the legacy v1 run
create and list, for servers that lack v2).

Why not the official SDK: it has no timeout by default (a request can hang forever), it does not
percent-encode path values, it ignores Retry-After and it imports telemetry. This client:

- puts a timeout on every request (connect, read, write and pool), overridable per call so a caller
  with a deadline can shrink it;
- sends the API key only as `Authorization: Bearer ...` to the API itself, never to an upload URL
  (those point at object storage), and scrubs it (and any 8+ character start or end of it) from
  every error text it produces, before any text is cut, and from what httpx and httpcore log;
- refuses a key that cannot be one (non-ASCII, whitespace, implausible length) without
  echoing it;
- turns every failure into one of two typed exceptions, each saying whether a retry may succeed:
  `ApiError` (the server answered with an error status) and `TransportError` (no usable answer:
  connection refused, reset, timeout).
"""

from __future__ import annotations

import json
import logging
import threading
import unicodedata
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import httpx

MAX_ERROR_BODY = 4096  # bytes of an error body kept for messages (the official CLI keeps 4 KiB)
MAX_ERROR_SCAN = 1 << 20  # bytes of an error body read at all (scrubbed, then cut)
MIN_KEY_LENGTH = 16  # shorter is not an API key (and a prefix could not be told from text)
MAX_KEY_LENGTH = 1024
MIN_SECRET_FRAGMENT = 8  # a key's prefix or suffix this long is scrubbed wherever it appears
REDACTED = "***"
_RETRYABLE_STATUS = frozenset({408, 429})
_USER_AGENT = "station (TofuPilot v2 client)"


class TofuPilotError(Exception):
    """Base class of every error this client raises."""

    retryable: bool = False
    retry_after_s: float | None = None


class ApiError(TofuPilotError):
    """The server answered with an error status (or an unusable success body).

    `code`, `message` and `issues` come from the server's `{code, message, issues}` body when it
    has one; a non-JSON body (a proxy's HTML page) becomes the message, truncated.
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        issues: list[str] | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.issues = list(issues or [])
        self.retry_after_s = retry_after_s
        text = f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"
        if self.issues:
            text += " (" + "; ".join(self.issues) + ")"
        super().__init__(text)

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """True for 408, 429 and 5xx, and for a 2xx whose body is unusable (the run was sent
        with its idempotency key, so sending it again cannot duplicate it)."""
        return self.status in _RETRYABLE_STATUS or self.status >= 500 or self.status < 300


class TransportError(TofuPilotError):
    """No usable answer: the connection failed, was dropped, or a timeout expired.

    `kind` is "connect" (no connection: nothing reached the server), "connection" (dropped
    during the exchange) or "timeout". Always retryable: after "connection" or "timeout" the
    request may or may not have been processed, which is why runs carry an idempotency key.
    """

    retryable = True

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)


class TofuPilotClient:
    """Talks to `{url}/v2/...` with a bearer key. Use as a context manager, or call `close()`.

    `url` is the API base as written in station.yaml (`https://www.tofupilot.app/api`).
    """

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        problem = api_key_problem(api_key)
        if problem is not None:  # never echo the key: say what is wrong with it
            raise ValueError(f"the API key is not usable: {problem}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._closed = False
        _LOG_SCRUBBER.add(api_key)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers={"user-agent": _USER_AGENT, "accept": "application/json"},
            follow_redirects=False,  # a redirected POST would be re-sent as GET; report it
            trust_env=True,
        )

    def __repr__(self) -> str:
        return f"TofuPilotClient(url={self.url!r}, timeout_s={self.timeout_s})"

    def __enter__(self) -> TofuPilotClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if not self._closed:
            self._closed = True
            _LOG_SCRUBBER.discard(self._api_key)

    # -- endpoints ------------------------------------------------------------------------------

    def create_run(self, body: dict[str, Any], *, timeout_s: float | None = None) -> str:
        """POST /v2/runs; returns the run id (the existing one if `client_run_ref` was seen)."""
        data = self._api("POST", "/v2/runs", body, timeout_s)
        return self._field(data, "id")

    def create_attachment(
        self, run_id: str, name: str, *, timeout_s: float | None = None
    ) -> tuple[str, str]:
        """POST /v2/runs/{id}/attachments; returns (attachment id, upload URL).

        The attachment row exists on the run from now on (linked, empty until its bytes are
        PUT). Some station keys may not call it (403): see `initialize_attachment`.
        """
        data = self._api("POST", f"/v2/runs/{_seg(run_id)}/attachments", {"name": name}, timeout_s)
        return self._field(data, "id"), self._field(data, "upload_url")

    def initialize_attachment(
        self, name: str, *, timeout_s: float | None = None
    ) -> tuple[str, str]:
        """POST /v2/attachments (the generic flow); returns (upload id, upload URL).

        The upload belongs to no run until `link_attachments` names it, so an upload whose
        bytes never arrive leaves nothing on any run.
        """
        data = self._api("POST", "/v2/attachments", {"name": name}, timeout_s)
        return self._field(data, "id"), self._field(data, "upload_url")

    def link_attachments(
        self, run_id: str, upload_ids: list[str], *, timeout_s: float | None = None
    ) -> None:
        """PATCH /v2/runs/{id} `{attachments: [upload ids]}`: attach finalized uploads to a run.

        Sending ids already linked again links nothing twice, so the call can be repeated.
        """
        self._api("PATCH", f"/v2/runs/{_seg(run_id)}", {"attachments": list(upload_ids)}, timeout_s)

    def upload_attachment_bytes(
        self, upload_url: str, data: bytes, content_type: str, *, timeout_s: float | None = None
    ) -> None:
        """PUT the bytes to the upload URL. No API key: the URL itself is the grant."""
        response = self._send(
            "PUT",
            upload_url,
            content=data,
            headers={"content-type": content_type},
            timeout_s=timeout_s,
        )
        if not 200 <= response.status_code < 300:
            raise self._api_error(response)

    def finalize_attachment(self, attachment_id: str, *, timeout_s: float | None = None) -> None:
        """POST /v2/attachments/{id}/finalize (the server records size and type)."""
        self._api("POST", f"/v2/attachments/{_seg(attachment_id)}/finalize", None, timeout_s)

    def whoami(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """GET /v2/whoami: `{type: station|user, station, user, organization}`."""
        return self._api("GET", "/v2/whoami", None, timeout_s)

    def current_station(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """GET /v2/stations/current (station keys): the station and its linked procedures."""
        return self._api("GET", "/v2/stations/current", None, timeout_s)

    def list_procedures(
        self, *, limit: int = 100, cursor: int | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """GET /v2/procedures (user keys): one page, `{data: [{id, name, ...}], meta: {has_more,
        next_cursor}}`."""
        params = {"limit": str(limit)}
        if cursor is not None:
            params["cursor"] = str(cursor)
        return self._api("GET", "/v2/procedures", None, timeout_s, params=params)

    def list_runs(
        self,
        *,
        serial_number: str,
        limit: int = 100,
        cursor: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """GET /v2/runs?serial_numbers=SN: one page of the unit's runs, newest started first,
        with their metadata: `{data: [...], meta: {has_more, next_cursor}}` (station history)."""
        params = {
            "serial_numbers": serial_number,
            "sort_by": "started_at",
            "sort_order": "desc",
            "include_metadata": "true",
            "limit": str(limit),
        }
        if cursor is not None:
            params["cursor"] = str(cursor)
        return self._api("GET", "/v2/runs", None, timeout_s, params=params)

    def create_run_v1(self, body: dict[str, Any], *, timeout_s: float | None = None) -> str:
        """POST /v1/runs (the legacy API, for servers that lack v2); returns the run id."""
        data = self._api("POST", "/v1/runs", body, timeout_s)
        return self._field(data, "id")

    def list_runs_v1(
        self, serial_number: str, *, timeout_s: float | None = None
    ) -> list[dict[str, Any]]:
        """GET /v1/runs?serial_number=: the unit's runs as the legacy API lists them (a JSON
        list; a `{data: [...]}` or `{result: [...]}` wrapper is unwrapped)."""
        data = self._json(
            "GET", "/v1/runs", None, timeout_s, params={"serial_number": serial_number}
        )
        if isinstance(data, dict):
            data = data.get("data", data.get("result"))
        if not isinstance(data, list):
            raise ApiError(200, "INVALID_RESPONSE", "the server's run list is not a list")
        return [run for run in data if isinstance(run, dict)]

    # -- plumbing -------------------------------------------------------------------------------

    def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout_s: float | None,
        *,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A request to the API whose answer must be a JSON object."""
        data = self._json(method, path, body, timeout_s, params=params)
        if not isinstance(data, dict):
            raise ApiError(200, "INVALID_RESPONSE", "the server's answer is not a JSON object")
        return data

    def _json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout_s: float | None,
        *,
        params: dict[str, str] | None = None,
    ) -> Any:
        """A request to the API: its JSON answer (ApiError for an error status or non-JSON)."""
        headers = {"authorization": f"Bearer {self._api_key}"}
        content: bytes | None
        if body is not None:
            content = json.dumps(body, allow_nan=False).encode()
            headers["content-type"] = "application/json"
        else:
            content = b"" if method == "POST" else None
        url = self.url + path
        if params:
            url += "?" + urlencode(params)
        response = self._send(method, url, content=content, headers=headers, timeout_s=timeout_s)
        if not 200 <= response.status_code < 300:
            raise self._api_error(response)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                "INVALID_RESPONSE",
                "the server's answer is not JSON: " + self._body_text(response.content),
            ) from None

    def _send(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None,
        headers: dict[str, str],
        timeout_s: float | None,
    ) -> httpx.Response:
        timeout = httpx.Timeout(timeout_s if timeout_s is not None else self.timeout_s)
        try:
            return self._http.request(
                method, url, content=content, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise TransportError(
                "timeout",
                f"{method} {_where(url)}: no answer within {timeout.read:g} s "
                f"({type(exc).__name__})",
            ) from None
        except httpx.ConnectError as exc:
            raise TransportError(
                "connect", f"{method} {_where(url)}: {self._scrub(str(exc)) or 'cannot connect'}"
            ) from None
        except (httpx.TransportError, OSError) as exc:
            # from None: the chained httpx exception adds nothing an operator can use, and a
            # request object hanging off a traceback is one more place a header could surface.
            raise TransportError(
                "connection",
                f"{method} {_where(url)}: {self._scrub(str(exc)) or type(exc).__name__}",
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. an invalid URL
            raise TransportError(
                "connection", f"{method} {_where(url)}: {self._scrub(str(exc))}"
            ) from None

    def _api_error(self, response: httpx.Response) -> ApiError:
        code: str | None = None
        issues: list[str] = []
        message = ""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            code = data.get("code") if isinstance(data.get("code"), str) else None
            said, error = data.get("message"), data.get("error")
            if isinstance(error, dict) and not said:  # the v1 API's shape: {error: {message}}
                said = error.get("message")
            message = said if isinstance(said, str) else ""
            for issue in data.get("issues") or []:
                if isinstance(issue, dict):
                    where = ".".join(str(p) for p in issue.get("path") or [])
                    text = str(issue.get("message", ""))
                    issues.append(f"{where}: {text}" if where else text)
                else:
                    issues.append(str(issue))
        if not message:
            message = self._body_text(response.content) or response.reason_phrase or "no message"
        if 300 <= response.status_code < 400:
            location = response.headers.get("location", "?")
            message = f"redirected to {_where(location)}: check tofupilot.url in station.yaml"
        return ApiError(
            response.status_code,
            self._cut(code) if code is not None else None,
            self._cut(message),
            [self._cut(i) for i in issues[:20]],
            retry_after_s=_retry_after(response.headers.get("retry-after")),
        )

    def _field(self, data: dict[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise ApiError(200, "INVALID_RESPONSE", f"the server's answer has no {name!r}")
        return value

    def _scrub(self, text: str) -> str:
        """Never let the key out, even if a server or proxy echoes it back."""
        return scrub_secret(text, self._api_key)

    def _cut(self, text: str) -> str:
        """Scrubbed, then cut to MAX_ERROR_BODY: a key echoed across the cut is already gone
        (cutting first would leave all but its last characters)."""
        return self._scrub(self._scrub(text)[:MAX_ERROR_BODY])

    def _body_text(self, content: bytes) -> str:
        """An error body as text for a message: scrubbed, cut, stripped."""
        text = content[:MAX_ERROR_SCAN].decode("utf-8", errors="replace")
        return self._cut(text).strip()


def _seg(value: str) -> str:
    """A path segment, percent-encoded (the SDK does not encode: `SN/1` would become two)."""
    return quote(value, safe="")


def _where(url: str) -> str:
    """The URL without its query string: presigned upload URLs carry their grant there."""
    return url.split("?", 1)[0]


def api_key_problem(key: str) -> str | None:
    """What makes `key` unusable as an API key, in words that never quote it; None if fine.

    A key is printable ASCII without whitespace, MIN_KEY_LENGTH to MAX_KEY_LENGTH long. A line
    break inside it would be written to files in full; a non-ASCII character (an en dash from a
    copy and paste) cannot go in an HTTP header. Only the bad character's position and kind
    are named.
    """
    for position, char in enumerate(key, 1):
        if char.isascii() and char.isprintable() and not char.isspace():
            continue
        if char in "\r\n":
            kind = "a line break"
        elif char == "\t":
            kind = "a tab"
        elif char.isspace():
            kind = "a space" if char == " " else "whitespace"
        elif not char.isprintable():
            kind = f"a control character (U+{ord(char):04X})"
        else:
            name = unicodedata.name(char, "").lower()
            kind = f"the non-ASCII character U+{ord(char):04X}" + (f" ({name})" if name else "")
        return (
            f"character {position} of {len(key)} is {kind}; an API key is printable ASCII "
            "without spaces (was it copied from a document that changed a character?)"
        )
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        return (
            f"it is {len(key)} characters long; an API key is {MIN_KEY_LENGTH} to "
            f"{MAX_KEY_LENGTH} characters (was it cut off, or is it something else?)"
        )
    return None


def scrub_secret(text: str, secret: str, *, min_fragment: int = MIN_SECRET_FRAGMENT) -> str:
    """`text` with `secret` replaced by REDACTED, and also every run of at least `min_fragment`
    characters that is the start of the secret or its end: what is left of a key that a cut
    (a truncated body, a log window) went through."""
    if not secret or not text:
        return text
    text = text.replace(secret, REDACTED)
    n = min(min_fragment, len(secret))
    head, tail = secret[:n], secret[-n:]
    if head not in text and tail not in text:
        return text
    out: list[str] = []
    i = 0
    while (start := text.find(head, i)) >= 0:  # prefixes, each extended as far as they match
        end = start + n
        while end - start < len(secret) and end < len(text) and text[end] == secret[end - start]:
            end += 1
        out += [text[i:start], REDACTED]
        i = end
    text = "".join([*out, text[i:]])
    out, i = [], 0
    while (end := text.find(tail, i)) >= 0:  # suffixes, each extended back as far as they match
        end += n
        start = end - n
        while (
            end - start < len(secret)
            and start > i
            and text[start - 1] == secret[-(end - start) - 1]
        ):
            start -= 1
        out += [text[i:start], REDACTED]
        i = end
    return "".join([*out, text[i:]])


class _LogScrubber(logging.Filter):
    """Scrubs the keys of open clients from what the HTTP libraries log.

    httpx and httpcore log requests and response headers at DEBUG; a proxy or server that
    echoes the Authorization header would put the key in a log. The filter sits on those
    libraries' own loggers (a logger's filters do not apply to its children, so on each of
    them), rewriting a record's message before any handler sees it.
    """

    LIBRARIES = ("httpx", "httpcore", "h11", "h2", "hpack")
    KNOWN = (
        "httpx",
        "httpcore",
        "httpcore.connection",
        "httpcore.http11",
        "httpcore.http2",
        "httpcore.proxy",
        "httpcore.socks",
    )

    def __init__(self) -> None:
        super().__init__()
        self._keys: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self._keys[key] += 1
        self.install()

    def discard(self, key: str) -> None:
        with self._lock:
            self._keys[key] -= 1
            if self._keys[key] <= 0:
                del self._keys[key]

    def install(self) -> None:
        """Put the filter on every logger of the HTTP libraries (idempotent)."""
        names = set(self.KNOWN)
        for name in list(logging.root.manager.loggerDict):
            if name.split(".", 1)[0] in self.LIBRARIES:
                names.add(name)
        for name in names:
            logger = logging.getLogger(name)
            if self not in logger.filters:
                logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            keys = list(self._keys)
        if not keys:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it; nothing of ours to scrub
            return True
        scrubbed = message
        for key in keys:
            scrubbed = scrub_secret(scrubbed, key)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_LOG_SCRUBBER = _LogScrubber()


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta form); an HTTP date or garbage gives None."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        from datetime import UTC, datetime

        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, min(seconds, 24 * 3600.0))
