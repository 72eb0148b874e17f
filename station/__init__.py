"""station: write production test procedures as plain Python phases.

The public authoring API, and nothing else::

    from station import phase, measure, SKIP
"""

from station.authoring.procedure import SKIP, measure, phase
from station.records.outcomes import Outcome, PhaseOutcome

__all__ = ["SKIP", "Outcome", "PhaseOutcome", "measure", "phase"]
__version__ = "0.1.0"
