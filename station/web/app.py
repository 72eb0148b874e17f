"""The operator page and its JSON API, as a Starlette application.

| method | path | what |
|---|---|---|
| GET | `/` | the page (static HTML, one script, one style sheet; nothing fetched from elsewhere) |
| GET | `/api/state` | the station now: unit, phases, prompt, counters, last units, instruments |
| POST | `/api/runs` | start a unit: `{"procedure": "FVT1", "serial": "SN-0001"}` |
| POST | `/api/prompts/{id}` | answer the open prompt: `{"answer": ...}` |
| GET | `/api/prompts/{id}/image` | the open prompt's picture (from the procedure's directory) |
| POST | `/api/abort` | abort the unit under test (teardown and the safe state still run) |
| GET | `/api/runs/recent` | the last units, newest first, with outcome and upload state |
| GET | `/api/events` | the live event stream (server-sent events) |

Why server-sent events and not WebSockets: the page only needs the server to push (events
flow one way; commands go as ordinary POSTs, where the CSRF and token checks already are); SSE
is plain HTTP, so the same token/cookie check covers it, it passes proxies that speak HTTP,
and the browser's EventSource reconnects by itself (each connection starts with the whole
state, so a reconnect misses nothing). Starlette + uvicorn: small, maintained, typed, and
needing no build step or JavaScript toolchain.

Errors are JSON `{"error": message}` with the status: 400 a bad request or a refused scan, 401
no token, 403 a CSRF check, 404 nothing there, 409 a unit already under test (or none to abort).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from station.web.hub import ApiError, StationHub
from station.web.security import Guard, GuardMiddleware

__all__ = ["KEEPALIVE_S", "RETRY_MS", "STATIC_FILES", "create_app"]

KEEPALIVE_S = 15.0  # a comment line this often keeps proxies and idle timeouts from closing
RETRY_MS = 1000  # how soon a browser reconnects a dropped stream
MAX_BODY = 64 * 1024  # a command's body; anything larger is refused
STATIC_FILES = {
    "station.js": "text/javascript; charset=utf-8",
    "station.css": "text/css; charset=utf-8",
}


def _static(name: str) -> bytes:
    return resources.files("station.web").joinpath("static", name).read_bytes()


def create_app(hub: StationHub, guard: Guard) -> Starlette:
    """The application serving `hub` behind `guard` (see the module docstring)."""
    page = _static("index.html")
    static = {name: _static(name) for name in STATIC_FILES}

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            raise ApiError(404, "no such file")
        return Response(static[name], media_type=STATIC_FILES[name])

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def state(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(hub.state))

    async def recent(request: Request) -> Response:
        return JSONResponse({"units": await run_in_threadpool(hub.recent)})

    async def start(request: Request) -> Response:
        body = await _json_object(request)
        result = await run_in_threadpool(hub.start, body.get("procedure"), body.get("serial"))
        return JSONResponse(result, status_code=202)

    async def answer(request: Request) -> Response:
        body = await _json_object(request)
        if "answer" not in body:
            raise ApiError(400, 'send the answer as {"answer": ...}')
        prompt_id = request.path_params["prompt_id"]
        return JSONResponse(await run_in_threadpool(hub.answer, prompt_id, body["answer"]))

    async def image(request: Request) -> Response:
        path, media = await run_in_threadpool(hub.image_path, request.path_params["prompt_id"])
        # An SVG is a document that could run script: served sandboxed, never as a page.
        return FileResponse(
            path,
            media_type=media,
            headers={
                "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"
            },
        )

    async def abort(request: Request) -> Response:
        await _json_object(request, optional=True)
        return JSONResponse(await run_in_threadpool(hub.abort), status_code=202)

    async def events(request: Request) -> Response:
        client = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield f"retry: {RETRY_MS}\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(client.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is None:
                        return
                    seq, text = item
                    yield f"id: {seq}\ndata: {text}\n\n"
            finally:
                client.close()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse({"error": exc.message, **exc.details}, status_code=exc.status)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return JSONResponse({"error": getattr(exc, "detail", "not found")}, status_code=status)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub.attach_loop(asyncio.get_running_loop())
        yield

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/static/{name}", static_file),
        Route("/api/state", state),
        Route("/api/runs", start, methods=["POST"]),
        Route("/api/runs/recent", recent),
        Route("/api/prompts/{prompt_id}", answer, methods=["POST"]),
        Route("/api/prompts/{prompt_id}/image", image),
        Route("/api/abort", abort, methods=["POST"]),
        Route("/api/events", events),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: api_error,
        404: not_found,
        405: not_found,
    }
    return Starlette(
        routes=routes,
        middleware=[Middleware(GuardMiddleware, guard=guard)],
        exception_handlers=handlers,
        lifespan=lifespan,
    )


async def _json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's body as a JSON object (ApiError 400 otherwise; {} if optional and empty)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiError(400, f"the request body is over {MAX_BODY} bytes")
    if not body.strip():
        if optional:
            return {}
        raise ApiError(400, "send a JSON object as the request body")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "send a JSON object as the request body")
    return data
