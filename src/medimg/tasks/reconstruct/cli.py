"""``medimg recon <modality> <verb>``: each modality package provides ``add_verbs(parser)``.

Only the modality named on the command line is imported, as for the top-level groups.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from medimg.tasks.cli_helpers import add_group

#: modality -> (module with add_verbs, description)
MODALITIES: dict[str, tuple[str, str]] = {
    "mri": ("medimg.tasks.reconstruct.mri.cli", "MRI from undersampled k-space"),
    "ct": ("medimg.tasks.reconstruct.ct.cli", "low-dose CT: FBP, iterative, CNN/GAN denoisers"),
    "us": ("medimg.tasks.reconstruct.us.cli", "ultrasound: channel-data simulation, DAS, B-mode"),
}


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the modality sub-groups; ``argv`` is what follows ``recon`` on the command line."""
    sub = parser.add_subparsers(dest="modality", metavar="<modality>")
    argv = list(argv)
    named = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, description) in MODALITIES.items():
        rest = argv[argv.index(name) + 1 :] if name == named else None
        add_group(sub, name, module_name, description, rest)
