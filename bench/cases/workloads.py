"""The same test written both ways: N phases of M measurements, each value checked in [0, 1].

`load_station_procedure` writes a procedure module and loads it the way `station run` does
(station.yaml + `load_procedure`); `openhtf_phases` builds the equivalent OpenHTF phases with
`htf.measures(Measurement(...).in_range(0, 1))`. Every value set is 0.5, so every run PASSes.
Imports of station and openhtf happen inside the functions: a child measuring one framework never
imports the other.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOW, HIGH, VALUE = 0.0, 1.0, 0.5


@dataclass(frozen=True)
class Shape:
    """A test of `phases` phases with `measurements` measurements each."""

    phases: int
    measurements: int  # per phase

    @property
    def total_measurements(self) -> int:
        return self.phases * self.measurements

    @property
    def label(self) -> str:
        if self.measurements == 0:
            return f"{self.phases:,} trivial phases"
        return f"{self.phases:,} phase{'s' * (self.phases != 1)} x {self.measurements:,} meas"

    def as_args(self) -> dict[str, int]:
        return {"phases": self.phases, "measurements": self.measurements}

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Shape:
        return cls(int(args["phases"]), int(args["measurements"]))


_STATION_MODULE = """
    \"\"\"Benchmark: {phases} phases x {measurements} measurements in [{low}, {high}].\"\"\"

    from station import measure, phase

    N_PHASES, N_MEASUREMENTS = {phases}, {measurements}


    def _make(index):
        if N_MEASUREMENTS == 0:

            def body():
                pass

        else:
            names = [f"m{{j}}" for j in range(N_MEASUREMENTS)]

            def body(measurements):
                for name in names:
                    measurements[name] = {value}

            for name in reversed(names):
                body = measure(name, low={low}, high={high})(body)
        body.__name__ = f"p{{index}}"
        return phase(body)


    PHASES = [_make(i) for i in range(N_PHASES)]
"""


def load_station_procedure(root: Path, shape: Shape, procedure_id: str = "B") -> Any:
    """Write the procedure and a station.yaml under `root`, and load it like `station run`."""
    from station.config.model import load_config
    from station.config.procedure_loader import load_procedure

    module = f"bench_{procedure_id.lower()}.py"
    source = _STATION_MODULE.format(
        phases=shape.phases, measurements=shape.measurements, low=LOW, high=HIGH, value=VALUE
    )
    (root / module).write_text(textwrap.dedent(source), encoding="utf-8")
    (root / "station.yaml").write_text(
        f"station: {{name: bench}}\nprocedures:\n  {procedure_id}: {{module: {module}}}\n",
        encoding="utf-8",
    )
    return load_procedure(procedure_id, load_config(root / "station.yaml"))


def openhtf_phases(shape: Shape) -> list[Any]:
    """The same phases for OpenHTF: `PhaseOptions(name=...)` and `measures(...in_range(...))`."""
    import openhtf as htf

    def make(index: int) -> Any:
        names = [f"m{j}" for j in range(shape.measurements)]

        def body(test: Any) -> None:
            for name in names:
                test.measurements[name] = VALUE

        descriptor = htf.PhaseOptions(name=f"p{index}")(body)
        if names:
            descriptor = htf.measures(
                *(htf.Measurement(name).in_range(LOW, HIGH) for name in names)
            )(descriptor)
        return descriptor

    return [make(i) for i in range(shape.phases)]
