"""``medimg recon <modality> <verb>``: each modality package provides ``add_verbs(parser)``.

Only the modality named on the command line is imported, as for the top-level groups.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from medimg.errors import MedimgError

#: modality -> (module with add_verbs, description, issue)
MODALITIES: dict[str, tuple[str, str, int]] = {
    "mri": ("medimg.tasks.reconstruct.mri.cli", "MRI from undersampled k-space", 3),
    "ct": ("medimg.tasks.reconstruct.ct.cli", "low-dose CT: FBP, iterative, CNN/GAN denoisers", 4),
}


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the modality sub-groups; ``argv`` is what follows ``recon`` on the command line."""
    sub = parser.add_subparsers(dest="modality", metavar="<modality>")
    named = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, description, issue) in MODALITIES.items():
        group = sub.add_parser(name, help=description, description=description)
        if name == named:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name is None or not module_name.startswith(exc.name):
                    raise
            else:
                module.add_verbs(group, argv[argv.index(name) + 1 :])
                continue
        group.set_defaults(func=_not_available(name, issue))


def _not_available(name: str, issue: int) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise MedimgError(f"'medimg recon {name}' has no verbs in this version yet (issue {issue})")

    return run
