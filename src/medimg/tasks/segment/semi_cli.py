"""Command line for training with few labels: ``segment train --semi / --few-shot /
--add-labels`` and ``segment pretrain``. Kept beside :mod:`.cli` (which calls it) so that file
stays one verb each; the pre-training and add-labels code is imported only when used."""

from __future__ import annotations

import argparse
from pathlib import Path

from medimg.errors import InputError
from medimg.tasks.cli_helpers import (
    add_device,
    add_quiet,
    add_threads,
    add_verb,
    positive_int,
    set_threads,
)

__all__ = ["add_label_flags", "add_pretrain_verb", "check_label_flags", "train_add_labels_cli"]

SEMI_CHOICES = ("uamt", "cps", "fixmatch")


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: give a weight >= 0")
    return value


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more structure names, comma-separated")
    return names


def add_label_flags(p: argparse.ArgumentParser) -> None:
    """``--semi``, ``--unlabelled``, ``--unlabelled-weight``, ``--few-shot``, ``--add-labels``."""
    p.add_argument("--semi", choices=SEMI_CHOICES,
                   help="also learn from unlabelled images: uamt (uncertainty-aware mean "
                        "teacher), cps (cross pseudo supervision) or fixmatch (confident "
                        "pseudo-labels)")  # fmt: skip
    p.add_argument("--unlabelled", metavar="DIR",
                   help="folder of unlabelled images for --semi (default: DATASET/"
                        "imagesUnlabelled and the imagesTr cases without a label)")  # fmt: skip
    p.add_argument("--unlabelled-weight", type=_weight, metavar="W",
                   help="weight of the unlabelled term (default: 1)")  # fmt: skip
    p.add_argument("--few-shot", action="store_true",
                   help="fine-tune --init on 1-5 labelled cases: lower rate, fewer steps, "
                        "encoder frozen for the first 20%% of steps then at 0.1x the rate, "
                        "stronger augmentation")  # fmt: skip
    p.add_argument("--add-labels", type=_names, metavar="NAME[,NAME...]",
                   help="add these structures to --init from cases labelled only for them, "
                        "keeping the model's old structures (learning without forgetting)")  # fmt: skip


def check_label_flags(args: argparse.Namespace) -> None:
    """One-line refusals for flag combinations that cannot work, before anything is read."""
    if args.add_labels and not args.init:
        raise InputError("--add-labels extends a trained model: add --init MODEL ('default' "
                         "for the shipped one)")  # fmt: skip
    if args.few_shot and not args.init:
        raise InputError("--few-shot fine-tunes a trained model: add --init MODEL ('default' "
                         "for the shipped one, or a pre-trained encoder folder)")  # fmt: skip
    if args.unlabelled and not args.semi:
        raise InputError("--unlabelled images need a method: add --semi uamt|cps|fixmatch")
    if args.unlabelled_weight is not None and not args.semi:
        raise InputError("--unlabelled-weight weighs --semi's unlabelled term: add --semi")
    ours = [f for f, v in (("--semi", args.semi), ("--few-shot", args.few_shot),
                           ("--add-labels", args.add_labels)) if v]  # fmt: skip
    if not ours:
        return
    other = [f for f, v in (("--preset", args.preset), ("--reviewed", args.reviewed),
                            ("--distill-from", args.distill_from), ("--arch", args.arch)) if v]  # fmt: skip
    if other:
        raise InputError(f"{ours[0]} trains on a DATASET; drop {', '.join(other)}")
    if args.add_labels and len(ours) > 1:
        raise InputError(f"--add-labels trains on its own schedule; drop {', '.join(ours[1:])}")
    if args.dataset is None:
        raise InputError(f"{ours[0]} needs a DATASET folder")


def train_add_labels_cli(args: argparse.Namespace) -> int:
    """``train DATA --init MODEL --add-labels NAMES``."""
    from medimg.tasks.segment.incremental import train_add_labels

    init = args.init
    if str(init) == "default":
        from medimg.tasks.segment.predict import DEFAULT_MODEL

        init = DEFAULT_MODEL
    out = Path(args.out or f"runs/segment/{Path(args.dataset).name}/add_labels")
    res = train_add_labels(args.dataset, out, init=init, add_labels=args.add_labels,
                           max_steps=args.max_steps, device=args.device,
                           progress=not args.quiet, resume=args.resume,
                           overwrite=args.overwrite)  # fmt: skip
    print(f"trained to step {res.last_step}; best {res.best_metric} at step {res.best_step}; "
          f"added {', '.join(args.add_labels)}; model folder {res.run_dir}")  # fmt: skip
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from medimg.tasks.segment.pretrain import pretrain_encoder

    set_threads(args.threads)
    res = pretrain_encoder(args.dataset, args.out, max_steps=args.max_steps, device=args.device,
                           progress=not args.quiet, resume=args.resume,
                           overwrite=args.overwrite)  # fmt: skip
    print(f"pre-trained to step {res.last_step}; best {res.best_metric} at step {res.best_step}; "
          f"model folder {res.run_dir} (fine-tune it: segment train DATA --init {args.out})")  # fmt: skip
    return 0


def add_pretrain_verb(sub: argparse._SubParsersAction) -> None:
    """``segment pretrain DATA --out DIR``: self-supervised pre-training on unlabelled images."""
    p = add_verb(sub, "pretrain", "pre-train a segmentation encoder on unlabelled images "
                 "(self-supervised); fine-tune it with train --init",
                 "medimg segment pretrain data/AbdomenCT --out runs/segment/pretrained\n"
                 "medimg segment train data/Few --init runs/segment/pretrained --few-shot")  # fmt: skip
    p.add_argument("dataset", help="MSD dataset folder or a folder of images (labels unused)")
    p.add_argument("--out", required=True, help="model folder to write (plan.yaml + weights)")
    p.add_argument("--max-steps", type=positive_int, metavar="N",
                   help="training steps (default: the pre-training recipe's)")  # fmt: skip
    add_device(p, default=None, what="the recipe's")
    add_threads(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    add_quiet(p)
    p.set_defaults(func=_pretrain)
