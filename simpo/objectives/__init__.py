"""Preference objectives, one per file, chosen with the config group ``loss=<name>``.

Each objective maps per-pair statistics (``PairLogps``) to an ``ObjectiveOutput`` and declares whether it needs
reference log-probs (``needs_reference``) or KTO's mismatched pairs (``needs_kl_pairs``).
"""

from __future__ import annotations

from simpo.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo.objectives.cpo import CPO
from simpo.objectives.dpo import DPO
from simpo.objectives.ipo import IPO
from simpo.objectives.kto import KTO
from simpo.objectives.orpo import ORPO
from simpo.objectives.rdpo import RDPO
from simpo.objectives.rrhf import RRHF
from simpo.objectives.simpo import SimPO
from simpo.objectives.slic import SLiC

OBJECTIVES: dict[str, type[Objective]] = {
    "simpo": SimPO,
    "dpo": DPO,
    "ipo": IPO,
    "rdpo": RDPO,
    "cpo": CPO,
    "orpo": ORPO,
    "slic": SLiC,
    "rrhf": RRHF,
    "kto": KTO,
}

__all__ = [
    "CPO",
    "DPO",
    "IPO",
    "KTO",
    "OBJECTIVES",
    "ORPO",
    "RDPO",
    "RRHF",
    "Objective",
    "ObjectiveOutput",
    "PairLogps",
    "SLiC",
    "SimPO",
]
