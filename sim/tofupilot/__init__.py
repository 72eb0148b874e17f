"""A TofuPilot v2 emulator: the endpoints a station uses, over real HTTP on loopback.

It exists so the reporter can be tested (and demonstrated) end to end without the SaaS: runs are
validated against the vendored run-create schema (dereferenced and compiled once, `schema.py`),
keys and procedure links are checked like the real service does, and faults (429, 5xx, hangs, a
response lost after the run was stored) can be injected while it serves.

    with TofuPilotEmulator() as tp:
        httpx.post(f"{tp.url}/v2/runs", json=body, headers={"Authorization": f"Bearer {key}"})
        tp.faults.plan(["429", "drop_after_store", "ok"])

Endpoints (under `{url}` = `http://127.0.0.1:PORT/api`): POST/GET `/v2/runs`, GET `/v2/runs/{id}`,
POST `/v2/runs/{id}/attachments`, POST `/v2/attachments/{id}/finalize`, GET `/v2/whoami`,
GET `/v2/stations/current`. Upload URLs point at the emulator itself (`/uploads/{id}`, no key,
like a presigned URL). Run `python -m sim.tofupilot --port 0` to serve it for a demo.
"""

from .emulator import TofuPilotEmulator
from .faults import Faults
from .schema import RunSchemaValidator, dereference, run_schema_validator
from .state import (
    CODES,
    MAX_ISSUE_MESSAGE,
    MAX_ISSUES,
    SCHEMA_RESOURCE,
    ApiError,
    RequestLog,
    StoredAttachment,
    StoredRun,
    default_keys,
    load_run_schema,
)

__all__ = [
    "CODES",
    "MAX_ISSUES",
    "MAX_ISSUE_MESSAGE",
    "SCHEMA_RESOURCE",
    "ApiError",
    "Faults",
    "RequestLog",
    "RunSchemaValidator",
    "StoredAttachment",
    "StoredRun",
    "TofuPilotEmulator",
    "default_keys",
    "dereference",
    "load_run_schema",
    "run_schema_validator",
]
