"""The shipped default models and their model cards, found where medimg is installed.

Each default model folder under ``medimg/tasks`` holds a ``MODEL_CARD.md`` (training data,
figures on real images, where not to trust it). ``medimg models`` lists them so a user of an
installed copy can open the card of the model a command uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ShippedModel", "shipped_models"]

_TASKS = Path(__file__).parent / "tasks"
#: model folder (relative to medimg/tasks) -> the command that uses it when no --model is given
_COMMANDS = {
    "segment/default": "medimg segment",
    "segment/brain": "medimg segment predict --model brain",
    "register/default": "medimg register",
    "detect/default": "medimg detect",
    "detect/default_lesion2d": "medimg detect predict2d",
    "diagnose/default": "medimg diagnose",
    "reconstruct/mri/default": "medimg recon mri",
    "reconstruct/ct/default": "medimg recon ct",
    "reconstruct/us/default": "medimg recon us predict --method learned",
    "reconstruct/us/despeckle": "medimg recon us despeckle",
    "synthesize/default": "medimg synthesize",
    "superres/default": "medimg superres",
}


@dataclass(frozen=True)
class ShippedModel:
    command: str
    folder: Path
    card: Path
    title: str


def shipped_models() -> list[ShippedModel]:
    """Every model folder with a card, in the order of :data:`_COMMANDS` (others after)."""
    order = list(_COMMANDS)
    found = []
    for card in _TASKS.rglob("MODEL_CARD.md"):
        rel = card.parent.relative_to(_TASKS).as_posix()
        lines = card.read_text(encoding="utf-8").splitlines()
        title = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("#")), rel)
        command = _COMMANDS.get(rel, f"medimg {rel.split('/')[0]}")
        rank = order.index(rel) if rel in order else len(order)
        found.append((rank, rel, ShippedModel(command, card.parent, card, title)))
    return [m for *_, m in sorted(found, key=lambda t: t[:2])]
