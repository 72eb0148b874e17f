"""A TofuPilot emulator (v2, and the legacy v1 runs API): the endpoints a station uses, over
real HTTP on loopback.

It exists so the reporter can be tested (and demonstrated) end to end without the SaaS, and is
as strict as the service where a station can go wrong: runs are validated against the vendored
run-create schema (dereferenced and compiled once, `schema.py`); procedures have UUID ids and
names, and a `procedure_id` that is not a UUID gets the service's 400 ("Invalid uuid"); a station
key may create runs only for the procedures linked to its station (403), a user key for any
existing one (404 otherwise); unknown sub-units, a missing part number and run-scoped
attachments for station keys can be made errors (switches). Faults (429 with Retry-After, 5xx,
hangs, a response lost after the run was stored) can be injected while it serves.

    with TofuPilotEmulator() as tp:
        fvt1 = tp.procedure_id("FVT1")          # linked to the demo station
        httpx.post(f"{tp.url}/v2/runs", json={..., "procedure_id": fvt1}, headers=...)
        tp.faults.plan(["429", "drop_after_store", "ok"])
        tp.unlink("FVT1"); tp.link("FVT1")      # as the dashboard does, while serving

Endpoints (under `{url}` = `http://127.0.0.1:PORT/api`): POST/GET `/v2/runs` (GET filtered by
`serial_numbers`, `procedure_ids`, `outcomes`..., sorted, paginated), GET/PATCH `/v2/runs/{id}`,
POST `/v2/runs/{id}/attachments`, POST `/v2/attachments`, POST `/v2/attachments/{id}/finalize`,
GET `/v2/procedures[/{id}]`, POST/GET `/v2/units`, GET `/v2/units/{serial}`, GET `/v2/whoami`,
GET `/v2/stations/current`; legacy POST/GET `/v1/runs` (`v1.py`). Answers have the shapes of the
official SDK's response models. Upload URLs point at the emulator itself (`/uploads/{id}`, no
key, like a presigned URL). Run `python -m sim.tofupilot --port 0` to serve it for a demo.
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
    Procedure,
    RequestLog,
    StoredAttachment,
    StoredRun,
    StoredUnit,
    default_keys,
    is_uuid,
    load_run_schema,
)

__all__ = [
    "CODES",
    "MAX_ISSUES",
    "MAX_ISSUE_MESSAGE",
    "SCHEMA_RESOURCE",
    "ApiError",
    "Faults",
    "Procedure",
    "RequestLog",
    "RunSchemaValidator",
    "StoredAttachment",
    "StoredRun",
    "StoredUnit",
    "TofuPilotEmulator",
    "default_keys",
    "dereference",
    "is_uuid",
    "load_run_schema",
    "run_schema_validator",
]
