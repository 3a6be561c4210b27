"""The ``medimg`` command: ``medimg <group> <verb>`` plus ``info``, ``convert`` and ``demo``.

Task groups (``recon``, ``detect``, ``segment``, ``register``, ``diagnose``, ``synthesize``,
``superres``) live in their task packages, each exposing ``add_verbs(parser, argv)`` (``argv``:
the words after the group's name, so a group can in turn import only what is named); only the
group named on the command line is imported, so ``medimg info`` starts without loading torch.
Any :class:`MedimgError` ends the program with a one-line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

from medimg import __version__
from medimg.errors import MedimgError
from medimg.tasks.cli_helpers import add_group, add_verb

#: group name -> (module providing ``add_verbs(parser, argv)``, one-line description)
TASK_GROUPS: dict[str, tuple[str, str]] = {
    "recon": ("medimg.tasks.reconstruct.cli", "reconstruction: MRI, low-dose CT, ..."),
    "detect": ("medimg.tasks.detect.cli", "lesion detection: lung nodules, FROC/CPM"),
    "segment": ("medimg.tasks.segment.cli", "segmentation: self-configuring U-Nets"),
    "register": ("medimg.tasks.register.cli", "deformable registration"),
    "diagnose": ("medimg.tasks.diagnose.cli", "computer-aided diagnosis"),
    "synthesize": ("medimg.tasks.synthesize.cli", "cross-modality synthesis: MR->CT, CT->MR"),
    "superres": ("medimg.tasks.superres.cli", "super-resolution: thick slices to thin"),
}


def _cmd_info(args: argparse.Namespace) -> int:
    from medimg.io.api import describe

    for line in describe(args.path):
        print(line)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from medimg.io.api import check_modality, load, save
    from medimg.io.output import check_outputs

    # arguments and the output are validated before the input is read: nothing is done on a
    # refusal
    if args.modality is not None:
        check_modality(args.modality)
    check_outputs([args.output], inputs=[args.input], overwrite=args.overwrite)
    image = load(
        args.input,
        series=_series_arg(args.series),
        modality=args.modality,
        allow_gaps=args.allow_gaps,
        tilt=args.tilt,
    )
    out = save(image, args.output, overwrite=args.overwrite)
    print(f"wrote {out}: {image!r}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from medimg.demo import run_demo

    return run_demo(args.out)


def _cmd_models(args: argparse.Namespace) -> int:
    from medimg.model_cards import shipped_models

    for m in shipped_models():
        print(f"{m.command:<24} {m.title}")
        print(f"{'':<24} card: {m.card}")
    return 0


def _series_arg(value: str | None) -> str | int | None:
    return int(value) if value is not None and value.isdigit() else value


def _add_builtin_commands(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        "info",
        "describe an image file, or list the DICOM series in a folder (one line each)",
        "medimg info scans/patient01/      # [0] 1.2.840... CT 'Chest' 512x512x200 0.70x0.70x1.25 mm",
    )
    p.add_argument("path", help="image file or folder")
    p.set_defaults(func=_cmd_info)

    p = add_verb(
        sub,
        "convert",
        "convert between NIfTI, NRRD/MHA and DICOM series (a path without extension)",
        "medimg convert scans/patient01/ ct.nii.gz --series 0\n"
        "medimg convert ct.nii.gz ct_dicom/ --modality CT",
    )
    p.add_argument("input", help="image file or DICOM folder")
    p.add_argument("output", help="output file (.nii.gz, .nrrd, .mha, ...) or folder for DICOM")
    p.add_argument("--series", help="series UID or index when the folder holds several")
    p.add_argument("--modality", help="modality to record (CT, MR, ...) for formats without one")
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.add_argument(
        "--allow-gaps",
        action="store_true",
        help="DICOM: resample across missing slices instead of refusing",
    )
    p.add_argument(
        "--tilt",
        choices=("refuse", "resample"),
        default="refuse",
        help="DICOM gantry tilt: refuse (default) or resample onto a regular grid",
    )
    p.set_defaults(func=_cmd_convert)

    p = add_verb(
        sub,
        "demo",
        "run the end-to-end demo on synthetic data (writes into runs/demo/)",
        "medimg demo\nmedimg demo --out /tmp/medimg-demo",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.set_defaults(func=_cmd_demo)

    p = add_verb(
        sub,
        "models",
        "list the shipped default models and where their model cards are (read one before "
        "using a model on real scans)",
        "medimg models",
    )
    p.set_defaults(func=_cmd_models)

    from medimg.deploy.cli import add_export

    add_export(sub)

    from medimg.review.cli import add_review_command  # the review page; light until it runs

    add_review_command(sub)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medimg",
        description="Deep learning across the medical-imaging pipeline.",
        epilog="example:\n  medimg info scans/\n  medimg demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medimg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    _add_builtin_commands(sub)
    argv = list(argv)
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    named = argv[first] if first is not None else None
    for name, (module_name, description) in TASK_GROUPS.items():
        add_group(sub, name, module_name, description, argv[first + 1 :] if name == named else None)
    return parser


_LIBRARY_LOGGERS = ("nibabel", "nibabel.global", "pydicom")


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


@contextlib.contextmanager
def _warnings_policy() -> Iterator[None]:
    """Third-party warnings (nibabel, ITK, pydicom, SciPy, numpy's floating-point notes) are
    hidden unless MEDIMG_DEBUG is set; medimg's own print as one ``warning: ...`` line."""
    debug = bool(os.environ.get("MEDIMG_DEBUG"))
    # nibabel and pydicom also report header fixes through logging ("sform_code 5 not valid;
    # setting to 0"), which reaches stderr through nibabel's own handler
    loggers = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
            # medimg's own (raised from a module under medimg.): user-facing notes
            warnings.filterwarnings("default", category=UserWarning, module=r"medimg(\.|$)")
            warnings.showwarning = _show_warning
            for lg in loggers:
                lg.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    with _warnings_policy():
        return _main(argv)


def _one_line(text: str) -> str:
    """A file name may hold line breaks: shown escaped, so an error stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MedimgError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # permissions, full disk...: the OS's words are the useful ones
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {_one_line(f'{where}{exc.strerror or exc}')}", file=sys.stderr)
        return 2
    except BaseException as exc:  # also a native library's panic (pyo3's PanicException)
        if isinstance(exc, (SystemExit, GeneratorExit)) or os.environ.get("MEDIMG_DEBUG"):
            raise
        kind, text = type(exc).__name__, " ".join(str(exc).split())[:300]  # one line
        print(
            f"error: internal error ({kind}: {text}); this is a bug in medimg, please report it "
            "(set MEDIMG_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
