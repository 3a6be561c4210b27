"""``medimg review DIR``: the command-line side of the review page (light: imports nothing
heavy until it runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_review_command"]


def _missing_proposals(root: Path, model: str, device: str) -> list[str]:
    """Segment the cases of ``root`` that have no proposal yet with ``model`` (first channel),
    writing ``proposals/<case>.nii.gz``; returns their names."""
    from medimg.review.folder import ReviewFolder
    from medimg.tasks.segment.predict import predict_path

    folder = ReviewFolder(root)
    done = []
    for case in folder.cases.values():
        if case.proposal is None:
            out = folder.root / "proposals" / f"{case.name}.nii.gz"
            predict_path(
                case.image,
                out,
                model=None if model == "default" else model,
                device=device,
                progress=False,
            )
            done.append(case.name)
    return done


def _run(args: argparse.Namespace) -> int:
    from medimg.errors import InputError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise InputError(
            "the review page needs FastAPI and uvicorn: pip install 'medimg[review]'"
        ) from None
    from medimg.review.server import serve

    if args.model:
        for name in _missing_proposals(Path(args.dir), args.model, args.device):
            print(f"proposed labels for {name}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach it and has the URL's token "
              "can read and change this folder")  # fmt: skip
    serve(args.dir, host=args.host, port=args.port, open_browser=args.open)
    return 0


def add_review_command(sub: argparse._SubParsersAction) -> None:
    """Register ``medimg review`` on the top-level sub-parsers."""
    from medimg.tasks.cli_helpers import add_device, add_verb, positive_int

    p = add_verb(sub, "review", "open a review folder in the browser: check, correct, accept "
                 "or reject a model's labels (local page, 127.0.0.1, random token)",
                 "medimg segment suggest scans/ --k 5 --out review/\n"
                 "medimg review review/ --port 8765")  # fmt: skip
    p.add_argument("dir", help="review folder (images/, proposals/, uncertainty/, queue.json)")
    p.add_argument("--model", help="segment the cases without a proposal with this model first "
                   "('default': the shipped one)")  # fmt: skip
    p.add_argument("--port", type=positive_int, default=8765, help="port (default: 8765)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this computer only)")  # fmt: skip
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    add_device(p)
    p.set_defaults(func=_run)
