"""station: write production test procedures as plain Python phases.

The public authoring API, and nothing else::

    from station import phase, measure, SKIP
"""

from station.outcomes import Outcome, PhaseOutcome
from station.procedure import SKIP, measure, phase

__all__ = ["SKIP", "Outcome", "PhaseOutcome", "measure", "phase"]
__version__ = "0.1.0"
