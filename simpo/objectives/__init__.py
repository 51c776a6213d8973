"""Preference objectives, one per file, chosen with the config group ``loss=<name>``.

Each objective maps per-pair statistics (``PairLogps``) to an ``ObjectiveOutput`` and declares whether it needs
reference log-probs (``needs_reference``) or KTO's mismatched pairs (``needs_kl_pairs``).
"""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.dpo import DPO
from simpo.objectives.simpo import SimPO

OBJECTIVES: dict[str, type[Objective]] = {
    "simpo": SimPO,
    "dpo": DPO,
}

__all__ = ["DPO", "OBJECTIVES", "Objective", "ObjectiveOutput", "PairLogps", "SimPO"]
