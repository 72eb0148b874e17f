"""Support for testing stations and procedures.

Owns the harness procedure authors test their phases with (`harness`: `run_phase`,
`run_procedure`, running a phase through the real engine with fake instruments) and the fault
points the crash tests use (`faultpoints`: inert unless `STATION_FAULT_POINT` is set).
`faultpoints` imports only `station.records`, so the storage and reporting layers may call it;
`harness` imports the engine and the config layer, so nothing in `station` imports it. This
`__init__` imports neither: `run_phase`, `run_procedure` and `PhaseResult` are loaded from
`harness` on first use, so `import station.testing.faultpoints` never pulls in the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from station.testing.harness import PhaseResult, run_phase, run_procedure

__all__ = ["PhaseResult", "run_phase", "run_procedure"]


def __getattr__(name: str) -> Any:
    """`from station.testing import run_phase`: the harness is imported on first use only."""
    if name in __all__:
        from station.testing import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'station.testing' has no attribute {name!r}")
