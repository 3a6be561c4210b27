"""``medimg register simulate|train|predict|evaluate``: the pipeline verbs, one each."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from medimg.tasks.cli_helpers import (
    ListAction,
    add_backend,
    add_device,
    add_run_flags,
    add_threads,
    add_verb,
    non_negative_int,
    positive_float,
    set_threads,
)

__all__ = ["add_verbs"]

#: ``losses.SIMILARITIES`` (a test keeps them equal); importing it would load torch for --help
SIMILARITIES = ("lncc", "mind", "mi", "mse")


def _shape(text: str) -> tuple[int, ...]:
    """argparse ``type=`` for a grid such as ``48x48x48`` or ``96x96``."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a grid; write sizes joined by x, e.g. 48x48x48"
        ) from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 2 or 3 positive sizes, e.g. 48x48x48")
    return shape


def _simulate(args: argparse.Namespace) -> int:
    from medimg.phantoms.registration import write_pair_dataset

    root = write_pair_dataset(args.out, args.kind, n_train=args.pairs, n_test=args.test,
                              seed=args.seed, shape=args.shape, spacing=args.spacing,
                              overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {args.pairs}+{args.test} synthetic {args.kind} pairs to {root} (dataset.json)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from medimg.tasks.register.train import (
        check_export,
        export_model,
        train_preset,
        train_registration,
    )

    set_threads(args.threads)
    if args.preset:
        work = Path(args.out or f"runs/register/{args.preset}")
        run_dir = work / "model"
    elif args.dataset is None:
        from medimg.errors import InputError

        raise InputError("train needs a DATASET (dataset.json, .json or .csv) or --preset default")
    else:
        mode = args.mode or "unsupervised"
        run_dir = Path(args.out or f"runs/register/{Path(args.dataset).stem}/{mode}")
    if args.export:  # checked now, not after hours of training
        check_export(run_dir, args.export, args.overwrite)
    if args.preset == "synth":  # pairs synthesised from label maps on the fly
        from medimg.tasks.register.synth_train import train_synth_preset

        res = train_synth_preset(work, init=args.init, max_steps=args.max_steps,
                                 device=args.device, progress=not args.quiet, resume=args.resume,
                                 overwrite=args.overwrite)  # fmt: skip
    elif args.preset == "real-brains":  # real brains under known warps, full supervision
        from medimg.tasks.register.brain_train import train_real_brains_preset

        res = train_real_brains_preset(work, init=args.init, max_steps=args.max_steps,
                                       device=args.device, progress=not args.quiet,
                                       resume=args.resume, overwrite=args.overwrite)  # fmt: skip
    elif args.preset:
        res = train_preset(work, preset=args.preset, coarse_model=args.coarse, mode=args.mode,
                           init=args.init, max_steps=args.max_steps, device=args.device,
                           progress=not args.quiet, resume=args.resume,
                           overwrite=args.overwrite)  # fmt: skip
    else:
        from medimg.tasks.register.train import RegConfig, load_config

        cfg = load_config(args.config) if args.config else RegConfig()
        if args.crop:
            cfg.crop = args.crop
        res = train_registration(args.dataset, run_dir, cfg, mode=mode,
                                 max_steps=args.max_steps, device=args.device,
                                 progress=not args.quiet, resume=args.resume,
                                 overwrite=args.overwrite, coarse_model=args.coarse,
                                 init=args.init)  # fmt: skip
    if args.export:
        print(
            f"exported the model to {export_model(res.run_dir, args.export, overwrite=args.overwrite)}"
        )
    print(f"trained to step {res.last_step}; best {res.best_metric} at step {res.best_step}; "
          f"model folder {res.run_dir}")  # fmt: skip
    return 0


def _check_predict_args(args: argparse.Namespace) -> None:
    from medimg.errors import InputError

    if args.fixed_labels and not args.moving_labels:
        raise InputError(
            "--fixed-labels scores the warped moving labels, so it needs --moving-labels too"
        )
    if args.time_budget is not None and not args.instance_opt:
        raise InputError("--time-budget limits --instance-opt; give --instance-opt N as well")
    if args.outputs is not None:
        from medimg.tasks.register.outputs import parse_outputs

        args.outputs = parse_outputs(",".join(args.outputs))
    if args.moving_labels is None and args.outputs and "labels" in args.outputs:
        raise InputError("--outputs labels writes the warped moving labels; give --moving-labels")
    if args.similarity and not (args.instance_opt or args.affine):
        raise InputError(
            "--similarity drives --instance-opt and --affine; give --instance-opt N as well"
        )
    if args.method != "model" and (args.instance_opt or args.affine or args.model):
        raise InputError(
            f"--instance-opt, --affine and --model apply to --method model, not {args.method}"
        )


def _predict(args: argparse.Namespace) -> int:
    import time

    from medimg.io.api import load
    from medimg.io.output import check_output_dir, is_owned
    from medimg.tasks.register.outputs import DEFAULT_OUTPUTS, OUTPUT_NAMES, write_outputs
    from medimg.tasks.register.predict import check_pair_image

    _check_predict_args(args)
    set_threads(args.threads)
    inputs = [p for p in (args.fixed, args.moving, args.fixed_labels, args.moving_labels) if p]
    # before any work, exactly as write_outputs' atomic_dir will check it
    check_output_dir(args.out, args.overwrite, inputs=inputs,
                     owned=is_owned(args.out, OUTPUT_NAMES))  # fmt: skip
    fixed, moving = load(args.fixed), load(args.moving)
    check_pair_image(fixed, args.fixed, "fixed")
    check_pair_image(moving, args.moving, "moving")
    ml = load(args.moving_labels, is_label=True) if args.moving_labels else None
    fl = load(args.fixed_labels, is_label=True) if args.fixed_labels else None
    if args.method == "model":
        from medimg.tasks.register.predict import Registrator

        t0, c0 = time.perf_counter(), time.process_time()
        reg = Registrator(args.model, device=args.device, backend=args.backend)
        load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
        res = reg.register(fixed, moving, moving_labels=ml, affine=args.affine,
                           instance_steps=args.instance_opt, time_budget_s=args.time_budget,
                           similarity=args.similarity)  # fmt: skip
        # what the user waited for: the model's loading counts (it is most of a small pair's time)
        res.seconds, res.cpu_seconds = res.seconds + load_s, res.cpu_seconds + load_cpu
        res.info["model_load_cpu_seconds"] = round(load_cpu, 3)
    else:
        from medimg.tasks.register.baseline import baseline_register

        res = baseline_register(fixed, moving, args.method, moving_labels=ml)
    for p in write_outputs(res, fixed, moving, args.out, fixed_labels=fl, overwrite=args.overwrite,
                           inputs=inputs, outputs=args.outputs or DEFAULT_OUTPUTS):  # fmt: skip
        print(f"wrote {p}")
    print(f"registered in {res.seconds:.2f} s ({res.cpu_seconds:.2f} s CPU)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medimg.tasks.register.evaluate import evaluate_dataset

    set_threads(args.threads)
    out = args.out or Path("runs/register/evaluation") / Path(args.dataset).with_suffix("").name
    res = evaluate_dataset(args.dataset, out, methods=tuple(args.methods),
                           model=args.model, split=args.split, instance_steps=args.instance_opt,
                           similarity=args.similarity, device=args.device, progress=not args.quiet,
                           overwrite=args.overwrite)  # fmt: skip
    for method, est in res["summary"].items():
        print(f"{method:13s} " + "  ".join(f"{k} {v}" for k, v in est.items()))
    print(f"wrote {out}/metrics.csv and summary.md")
    return 0


def add_verbs(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the registration verbs to ``medimg register``."""
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    p = add_verb(sub, "simulate", "write synthetic pairs with known fields, labels and landmarks",
              "medimg register simulate data/RegMR --kind mr --pairs 24 --test 8 --shape 48x48x48 --spacing 4\n"
              "medimg register simulate data/RegMRCT --kind mr-ct     # multi-modal pairs")  # fmt: skip
    p.add_argument("out", help="output folder (Learn2Reg-style dataset.json)")
    p.add_argument("--kind", choices=("mr", "mr-ct", "ct"), default="mr",
                   help="mr: MR-like pairs; mr-ct: MR moving onto CT-like fixed (multi-modal); "
                        "ct: CT-like pairs (default: mr)")  # fmt: skip
    p.add_argument("--pairs", type=non_negative_int, default=12, help="training pairs")
    p.add_argument("--test", type=non_negative_int, default=4,
                   help="held-out pairs (registration_test)")  # fmt: skip
    p.add_argument("--shape", type=_shape, default="48x48x48",
                   help="grid, e.g. 64x64x64 or 96x96 (2D)")  # fmt: skip
    p.add_argument("--spacing", type=positive_float, default=4.0,
                   help="isotropic voxel size (mm)")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier synthetic set in OUT")  # fmt: skip
    p.set_defaults(func=_simulate)

    p = add_verb(sub, "train", "train a registration network (unsupervised, weak or full supervision)",
              "medimg register train data/RegMR --mode weak\n"
              "medimg register train data/RegMR/dataset.json --supervision full --max-steps 500\n"
              "medimg register train --preset default --export src/medimg/tasks/register/default --overwrite")  # fmt: skip
    p.add_argument("dataset", nargs="?", help="dataset.json (or its folder), pairs .json or .csv")
    p.add_argument("--mode", "--supervision", dest="mode",
                   choices=("unsupervised", "weak", "supervised", "full"),
                   help="unsupervised: similarity + smoothness; weak: + Dice of warped labels; "
                        "supervised/full: regress the true field")  # fmt: skip
    p.add_argument("--preset", choices=("default", "fine-2mm", "synth", "real-brains"),
                   help="recipes: default (4 mm stage on phantom pairs), fine-2mm (its 2 mm "
                        "refinement; --coarse defaults to the shipped 4 mm stage), synth (4 mm "
                        "stage on pairs synthesised from brain tissue maps and random shapes, "
                        "any contrast; SynthMorph), real-brains (4 mm stage on a real T1 under "
                        "known warps, any contrast, end-point error + Dice)")  # fmt: skip
    p.add_argument("--config", help="reg.yaml with network/loss/engine settings")
    p.add_argument(
        "--coarse",
        metavar="MODEL",
        help="train a refinement of this model's field (multi-resolution cascade)",
    )
    p.add_argument("--crop", type=_shape,
                   help="train on random crops of this size, e.g. 48x48x48")  # fmt: skip
    add_run_flags(p, out="run/model folder", settings="the config's",
                  init="fine-tune this model or run folder (its network settings are used)",
                  export="reg.yaml")  # fmt: skip
    p.set_defaults(func=_train)

    p = add_verb(sub, "predict", "register MOVING to FIXED; write warped image/labels, field, PNG",
              "medimg register predict fixed.nii.gz moving.nii.gz out/ --moving-labels mlab.nii.gz\n"
              "medimg register predict fixed.nii.gz moving.nii.gz out/ --instance-opt 50\n"
              "medimg register pair t1.nii.gz t2.nii.gz out/ --instance-opt 100 --similarity mind\n"
              "medimg register pair fixed.nii.gz moving.nii.gz out_demons/ --method sitk-demons "
              "--outputs warped,transform",
              aliases=("pair",))  # fmt: skip
    if argv[:1] == ["pair"]:  # argparse names an alias' parser after the verb; say what was typed
        p.prog = p.prog.rsplit(" ", 1)[0] + " pair"
    p.add_argument("fixed", help="fixed (target) image file")
    p.add_argument("moving", help="moving image file, warped onto FIXED")
    p.add_argument("out", help="output folder")
    p.add_argument("--moving-labels", help="label map of the moving image (warped too)")
    p.add_argument("--fixed-labels", help="label map of the fixed image (Dice in summary.json)")
    p.add_argument(
        "--method",
        default="model",
        choices=("model", "sitk-demons", "sitk-bspline", "ants-syn"),
        help="model: the network (default); sitk-demons, sitk-bspline: SimpleITK baselines; "
        "ants-syn: ANTsPy SyN (needs medimg[ants])",
    )
    p.add_argument("--model", help="model/run folder (default: the shipped default model)")
    p.add_argument("--affine", action="store_true", help="affine stage before the network")
    add_backend(p)
    p.add_argument("--instance-opt", type=non_negative_int, default=0, metavar="N",
                   help="refine the field for N optimisation steps")  # fmt: skip
    p.add_argument("--time-budget", type=positive_float,
                   help="seconds allowed for --instance-opt")  # fmt: skip
    p.add_argument("--similarity", choices=SIMILARITIES,
                   help="what --instance-opt and --affine maximise (default: the model's, lncc): "
                        "lncc local correlation (same contrast, or inverted), mind MIND-SSC "
                        "descriptors (cross-contrast, e.g. T1 to T2), mi mutual information, "
                        "mse (same contrast and scale)")  # fmt: skip
    p.add_argument("--outputs", action=ListAction, metavar="LIST", empty_ok=True,
                   help="comma-separated files to write, from warped, labels, field, transform "
                        "(ITK .h5), jacobian, png, or 'all' (default: warped,labels,field,png; "
                        "labels only with --moving-labels); summary.json is always written")  # fmt: skip
    add_device(p)
    add_threads(p)
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs in OUT")
    p.set_defaults(func=_predict)

    p = add_verb(sub, "evaluate", "compare methods on held-out pairs (CSV + Markdown with CIs)",
              "medimg register evaluate data/RegMR --methods identity,model,model+io,sitk-demons")  # fmt: skip
    p.add_argument("dataset", help="dataset.json (or its folder), pairs .json or .csv")
    p.add_argument(
        "--methods",
        action=ListAction,
        default=["identity", "model", "sitk-demons"],
        help="comma-separated: identity, model, model+io (instance optimisation from the better "
        "of the network's field and the identity), io (from the identity), sitk-demons, "
        "sitk-bspline, ants-syn (ANTsPy SyN, needs medimg[ants])",
    )
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="which pairs of the dataset to score (default: test)")  # fmt: skip
    p.add_argument("--model", help="model folder (default: the shipped default model)")
    p.add_argument("--instance-opt", type=non_negative_int, default=50,
                   help="steps for model+io and io")  # fmt: skip
    p.add_argument("--similarity", choices=SIMILARITIES,
                   help="what model+io and io maximise (default: the model's, lncc)")  # fmt: skip
    p.add_argument("--out", help="report folder (default runs/register/evaluation/<dataset>)")
    add_device(p)
    add_threads(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.set_defaults(func=_evaluate)
