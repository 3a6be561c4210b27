"""What every task's command-line group shares: a verb whose ``--help`` ends with a worked
example, and the common flags ``--device`` and ``--threads``, spelt and checked one way. Light on purpose (torch is imported only
when a thread count is set), so ``medimg --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ListAction",
    "add_backend",
    "add_device",
    "add_group",
    "add_overwrite",
    "add_quiet",
    "add_run_flags",
    "add_threads",
    "add_verb",
    "add_window",
    "check_init_preset",
    "default_report_dir",
    "device",
    "finite_float",
    "fraction",
    "non_negative_int",
    "overlap_fraction",
    "positive_float",
    "positive_int",
    "probability",
    "set_threads",
]


def add_verb(
    sub: argparse._SubParsersAction,
    name: str,
    help_: str,
    example: str,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A sub-command ``name`` with ``help_`` (``%%`` for a literal ``%``, as argparse wants in
    help strings) and an epilog showing ``example``."""
    return sub.add_parser(
        name,
        help=help_,
        description=help_.replace("%%", "%"),
        aliases=list(aliases),
        epilog="example:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


class ListAction(argparse.Action):
    """A list flag written one way in every verb: values after the flag, separated by spaces,
    commas or both (``--methods a b`` = ``--methods a,b``). ``item_type`` converts each value
    and ``choices`` checks it, after the split (argparse would check the unsplit ``a,b``);
    ``empty_ok`` leaves an empty list (``--outputs ""``) to the verb's own check."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        item_type: object = str,
        choices: Sequence[object] | None = None,
        nargs: str = "+",
        metavar: str | None = None,
        empty_ok: bool = False,
        **kwargs: object,
    ) -> None:
        self.item_type, self.allowed = item_type, tuple(choices) if choices else None
        self.empty_ok = empty_ok  # an empty list left to the verb's own check
        if metavar is None and self.allowed:
            metavar = "{" + ",".join(map(str, self.allowed)) + "}"
        super().__init__(option_strings, dest, nargs=nargs, metavar=metavar, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        words = [values] if isinstance(values, str) else list(values or ())
        items = []
        for part in (p.strip() for w in words for p in str(w).split(",")):
            if not part:
                continue
            try:
                item = self.item_type(part)  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                parser.error(f"argument {option_string}: {exc}")
            if self.allowed is not None and item not in self.allowed:
                allowed = ", ".join(map(str, self.allowed))
                parser.error(f"argument {option_string}: {part!r} is not one of {allowed}")
            items.append(item)
        if not items and self.nargs == "+" and not self.empty_ok:
            parser.error(f"argument {option_string}: give at least one value")
        setattr(namespace, self.dest, items)


def device(text: str) -> str:
    """argparse ``type=`` for ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. Whether
    that GPU exists is checked when the device is used (``medimg.engine.resolve_device``)."""
    from medimg.devices import parse_device
    from medimg.errors import InputError

    try:
        return parse_device(text)
    except InputError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device; give auto, cpu, cuda or cuda:N (N = GPU index)"
        ) from None


def add_device(
    parser: argparse.ArgumentParser, default: str | None = "auto", what: str = ""
) -> None:
    """``--device auto|cpu|cuda|cuda:N``, the same spelling in every verb. ``default=None``
    leaves the choice to the run's config (``what`` says which, e.g. "the config's")."""
    shown = default if default is not None else (what or "the config's")
    parser.add_argument(
        "--device",
        type=device,
        default=default,
        metavar="DEVICE",
        help=f"auto, cpu, cuda or cuda:N; auto = a GPU when there is one (default: {shown})",
    )


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch CPU threads, applied by the verb through :func:`set_threads`."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch CPU threads (default: torch's choice; 1 is often fastest on a shared CPU)",
    )


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` when ``n`` is given. One thread is often the fast choice on a
    shared CPU: OpenMP workers spin-wait when the cores are oversubscribed."""
    if n is not None:
        import torch

        torch.set_num_threads(max(1, int(n)))


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts that must be at least 1 (``--cases``, ``--threads``...)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse ``type=`` for counts that may be 0 (``--seed``, ``--instance-opt``...)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}; give a number >= {low}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text: str) -> float:
    """argparse ``type=``: any finite number (NaN and infinities are refused)."""
    return _float(text)


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0 (spacing, photon count, learning rate...)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not above 0; give a positive number")
    return value


def fraction(text: str) -> float:
    """argparse ``type=``: a finite number in (0, 1] (dose fraction, ACS fraction...)."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in (0, 1]; give a fraction like 0.25")
    return value


def probability(text: str) -> float:
    """argparse ``type=``: a finite number in [0, 1] (a score or probability threshold...)."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in [0, 1]; give a value like 0.5")
    return value


def add_group(
    sub: argparse._SubParsersAction,
    name: str,
    module_name: str,
    description: str,
    argv: Sequence[str] | None,
) -> None:
    """A command group (``segment``, ``recon mri``...) whose verbs live in ``module_name``'s
    ``add_verbs(parser, argv)``. The module is imported only when the command line names the
    group (``argv``: the words after its name; ``None`` when not named), so ``medimg info`` does
    not import torch."""
    group = sub.add_parser(name, help=description, description=description)
    if argv is not None:
        importlib.import_module(module_name).add_verbs(group, argv)


def overlap_fraction(text: str) -> float:
    """argparse ``type=``: a sliding-window overlap in [0, 1)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not in [0, 1); give e.g. 0.5 or 0.25")
    return value


def add_window(parser: argparse.ArgumentParser, overlap: float, batch: int) -> None:
    """``--overlap`` and ``--batch`` of sliding-window inference, with the task's defaults."""
    parser.add_argument("--overlap", type=overlap_fraction, default=overlap,
                        help=f"overlap of neighbouring windows, 0 (fastest) to <1 "
                             f"(default: {overlap:g})")  # fmt: skip
    parser.add_argument("--batch", type=positive_int, default=batch,
                        help=f"windows per forward pass; more is faster on a GPU, needs more "
                             f"memory (default: {batch})")  # fmt: skip


def add_backend(parser: argparse.ArgumentParser) -> None:
    """``--backend torch|onnxruntime`` of ``predict``: which runtime makes the network call."""
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="network runtime; onnxruntime takes an exported .onnx as --model "
                             "(or exports the model in memory) (default: torch)")  # fmt: skip


def default_report_dir(task: str, source: str | Path) -> Path:
    """Where ``evaluate`` writes its report without ``--out``: ``runs/<task>/evaluation/<name of
    the evaluated folder or file>`` under the current folder, never inside the input folders
    (they may be read-only, shared, or a dataset that must stay as it was)."""
    name = Path(source).resolve().name.split(".")[0] or "input"
    return Path("runs") / task / "evaluation" / name


def add_overwrite(parser: argparse.ArgumentParser, what: str = "earlier outputs") -> None:
    """``--overwrite``: replace ``what`` (outputs medimg wrote; inputs are never replaced)."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bar or progress lines."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")


def add_run_flags(
    parser: argparse.ArgumentParser,
    *,
    out: str,
    settings: str = "the preset's",
    init: str | None = None,
    export: str | None = None,
) -> None:
    """The flags every training verb shares, spelled and explained one way: ``--out`` (``out``:
    its help), ``--max-steps``, ``--device``, ``--threads``, ``--resume``, ``--init MODEL`` (when
    ``init`` gives its help), ``--overwrite``, ``--quiet``, ``--export MODEL_DIR`` (when ``export``
    names what is copied besides the weights). ``settings`` names where the defaults come from."""
    parser.add_argument("--out", help=out)
    parser.add_argument("--max-steps", type=positive_int, metavar="N",
                        help=f"training steps (default: {settings})")  # fmt: skip
    add_device(parser, default=None, what=settings)
    add_threads(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint")  # fmt: skip
    if init is not None:
        parser.add_argument("--init", metavar="MODEL", help=init)
    add_overwrite(parser, "an earlier run in --out (start over), and --export's files")
    add_quiet(parser)
    if export is not None:
        parser.add_argument("--export", metavar="MODEL_DIR",
                            help=f"also copy {export} and the best weights into this model "
                                 "folder")  # fmt: skip


def check_init_preset(args: argparse.Namespace) -> None:
    """``--init`` with ``--preset``: a one-line refusal (a preset trains the shipped model anew;
    ``--init`` fine-tunes a model on the user's own data)."""
    if getattr(args, "init", None) and getattr(args, "preset", None):
        from medimg.errors import InputError

        raise InputError("--init fine-tunes on your DATASET; --preset trains the default anew")
