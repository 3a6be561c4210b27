"""One CLI grammar across ``medimg <group> <verb>``: every option has help, ``--help`` names
the command, ``--threads`` wherever torch runs, one ``--device`` spelling, and training
progress as log lines when stderr is not a terminal."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator

import pytest

from medimg.cli import TASK_GROUPS, build_parser, main
from medimg.engine.runlog import ProgressLines, progress_bar
from medimg.tasks import cli_helpers
from medimg.tasks.reconstruct.cli import MODALITIES

#: the command-line prefixes whose verbs are built (a group imports only the one named)
_PREFIXES = [[]] + [[g] for g in TASK_GROUPS if g != "recon"] + [["recon", m] for m in MODALITIES]

#: verbs that run torch models or operators: each must take --threads
_TORCH_VERBS = {
    ("detect", "train"),
    ("detect", "predict"),
    ("detect", "train2d"),
    ("detect", "predict2d"),
    ("segment", "train"),
    ("segment", "predict"),
    ("register", "train"),
    ("register", "predict"),
    ("register", "evaluate"),
    ("diagnose", "train"),
    ("diagnose", "predict"),
    ("diagnose", "explain"),
    ("diagnose", "calibrate"),
    ("recon", "mri", "train"),
    ("recon", "mri", "predict"),
    ("recon", "mri", "adapt"),
    ("recon", "mri", "calibrate"),
    ("recon", "mri", "evaluate"),
    ("recon", "ct", "reconstruct"),
    ("recon", "ct", "train"),
    ("recon", "ct", "adapt"),
    ("recon", "ct", "predict"),
    ("recon", "ct", "evaluate"),
}


def _children(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # an alias maps to the same parser
                    seen.add(id(sub))
                    yield name, sub


def _leaves(
    parser: argparse.ArgumentParser, path: list[str]
) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    kids = list(_children(parser))
    if not kids:
        yield path, parser
    for name, sub in kids:
        yield from _leaves(sub, [*path, name])


def _all_verbs() -> list[tuple[list[str], argparse.ArgumentParser]]:
    verbs = []
    for prefix in _PREFIXES:
        for path, parser in _leaves(build_parser(prefix), []):
            # a prefix builds only its own group fully; the others are stubs without verbs
            if path[: len(prefix)] == prefix and (len(path) > len(prefix) or not prefix):
                if path and (not prefix and path[0] in TASK_GROUPS):
                    continue  # the un-built stub of a task group
                verbs.append((path, parser))
    return verbs


_VERBS = _all_verbs()
_IDS = [" ".join(path) for path, _ in _VERBS]


def _missing_help(parser: argparse.ArgumentParser) -> list[str]:
    return [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
    ]


def test_the_walk_finds_every_group() -> None:
    groups = {tuple(path[:2]) if path[0] == "recon" else (path[0],) for path, _ in _VERBS}
    expected = {(g,) for g in TASK_GROUPS if g != "recon"} | {("recon", m) for m in MODALITIES}
    assert expected <= groups
    assert {"info", "convert", "demo"} <= {path[0] for path, _ in _VERBS}
    assert len(_VERBS) > 30


def test_the_help_check_flags_an_option_without_help() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--good", help="documented")
    parser.add_argument("--bad")
    parser.add_argument("--empty", help="  ")
    assert _missing_help(parser) == ["--bad", "--empty"]


@pytest.mark.parametrize(("path", "parser"), _VERBS, ids=_IDS)
def test_every_option_has_help(path: list[str], parser: argparse.ArgumentParser) -> None:
    assert _missing_help(parser) == [], f"medimg {' '.join(path)}: options without help"


@pytest.mark.parametrize(("path", "parser"), _VERBS, ids=_IDS)
def test_help_shows_the_full_command(
    path: list[str], parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser(path).parse_args([*path, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: medimg {' '.join(path)}" in " ".join(out.split())


def _minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for the positionals and required options, enough to parse."""
    argv: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings and action.nargs not in ("?", "*"):
            argv.append("x")
        elif action.option_strings and action.required:
            argv += [action.option_strings[0], "x"]
    return argv


_TORCH = [(p, v) for p, v in _VERBS if tuple(p) in _TORCH_VERBS]


def test_the_torch_verb_list_is_current() -> None:
    assert {tuple(p) for p, _ in _TORCH} == _TORCH_VERBS


class _ThreadsSet(Exception):
    pass


@pytest.mark.parametrize(("path", "parser"), _TORCH, ids=[" ".join(p) for p, _ in _TORCH])
def test_torch_verbs_take_threads_and_apply_it(
    path: list[str], parser: argparse.ArgumentParser, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = build_parser(path)
    args = top.parse_args([*path, *_minimal_argv(parser), "--threads", "2"])
    assert args.threads == 2
    with pytest.raises(SystemExit) as stop:
        top.parse_args([*path, *_minimal_argv(parser), "--threads", "0"])
    assert stop.value.code == 2
    # the verb hands the number to torch (through set_threads) before any work on the inputs
    seen: list[int | None] = []

    def fake_set_threads(n: int | None) -> None:
        seen.append(n)
        raise _ThreadsSet

    module = sys.modules[args.func.__module__]
    monkeypatch.setattr(module, "set_threads", fake_set_threads)
    monkeypatch.setattr(cli_helpers, "set_threads", fake_set_threads)
    with pytest.raises(_ThreadsSet):
        args.func(args)
    assert seen == [2]


def test_set_threads_sets_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        cli_helpers.set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


_WITH_DEVICE = [
    (p, v) for p, v in _VERBS if any("--device" in a.option_strings for a in v._actions)
]


def test_device_verbs_found() -> None:
    assert len(_WITH_DEVICE) >= 15


@pytest.mark.parametrize(
    ("path", "parser"), _WITH_DEVICE, ids=[" ".join(p) for p, _ in _WITH_DEVICE]
)
def test_device_accepts_one_spelling_everywhere(
    path: list[str], parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    (action,) = [a for a in parser._actions if "--device" in a.option_strings]
    assert action.type is cli_helpers.device and action.help
    top = build_parser(path)
    base = [*path, *_minimal_argv(parser)]
    for value in ("auto", "cpu", "cuda", "cuda:1", "CUDA:0"):
        assert top.parse_args([*base, "--device", value]).device == value.lower()
    with pytest.raises(SystemExit) as stop:
        top.parse_args([*base, "--device", "gpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "'gpu' is not a device; give auto, cpu, cuda or cuda:N" in err[-1]
    assert err[-1].startswith("medimg ") and ": error: argument --device" in err[-1]


@pytest.mark.parametrize("bad", ["cuda:", "cuda:x", "cuda1", "tpu", ""])
def test_device_type_refuses(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a device"):
        cli_helpers.device(bad)


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_steps(bar: object, steps: int) -> None:
    """What the trainer does with its bar: a loss every other step, update, close."""
    for step in range(1, steps + 1):
        if step % 2 == 0:
            bar.set_postfix(loss=f"{1 / step:.4g}", refresh=False)  # type: ignore[attr-defined]
        bar.update(1)  # type: ignore[attr-defined]
    bar.close()  # type: ignore[attr-defined]


def test_progress_without_a_terminal_is_log_lines() -> None:
    stream = _Pipe()
    bar = progress_bar(40, 0, enabled=True, stream=stream)
    assert isinstance(bar, ProgressLines)
    _run_steps(bar, 40)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 20  # every 2 steps (40 // 20), the last one included
    assert lines[0].startswith("step 2/40 (5%)  loss 0.5  ")
    assert lines[-1].startswith("step 40/40 (100%)  loss 0.025  ")
    assert all(line.split()[-1] in ("s", "left") for line in lines)  # elapsed time on each


def test_progress_lines_resume_and_time_interval() -> None:
    stream = _Pipe()
    bar = ProgressLines(1000, initial=500, stream=stream, every=100, min_interval_s=0.0)
    _run_steps(bar, 3)  # an interval of 0 s: a line on every step
    lines = stream.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == ["501/1000", "502/1000", "503/1000"]


def test_progress_lines_say_where_an_early_stop_ended() -> None:
    stream = _Pipe()
    bar = ProgressLines(100, stream=stream, every=10)
    _run_steps(bar, 13)
    lines = stream.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == ["10/100", "13/100"]


def test_progress_disabled_or_on_a_terminal_is_not_lines() -> None:
    quiet = _Pipe()
    _run_steps(progress_bar(10, 0, enabled=False, stream=quiet), 10)
    assert quiet.getvalue() == ""
    terminal = _Terminal()
    bar = progress_bar(10, 0, enabled=True, stream=terminal)
    assert not isinstance(bar, ProgressLines)  # tqdm's bar
    _run_steps(bar, 10)
    assert "\r" in terminal.getvalue()


def _list_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.nargs in ("+", "*")]


@pytest.mark.parametrize(("path", "parser"), _VERBS, ids=_IDS)
def test_lists_are_written_one_way(path: list[str], parser: argparse.ArgumentParser) -> None:
    for action in _list_options(parser):
        assert isinstance(action, cli_helpers.ListAction), (path, action.option_strings)


def test_list_flags_take_spaces_or_commas(capsys: pytest.CaptureFixture[str]) -> None:
    path = ["register", "evaluate"]
    top = build_parser(path)
    spaced = top.parse_args([*path, "D", "--methods", "identity", "model"]).methods
    commas = top.parse_args([*path, "D", "--methods", "identity,model"]).methods
    assert spaced == commas == ["identity", "model"]
    path = ["recon", "mri", "evaluate"]
    top = build_parser(path)
    both = top.parse_args([*path, "D", "--methods", "zero_filled,cs_tv", "cs_wavelet"]).methods
    assert both == ["zero_filled", "cs_tv", "cs_wavelet"]
    with pytest.raises(SystemExit) as stop:
        top.parse_args([*path, "D", "--methods", "zero_filled,magic"])
    assert stop.value.code == 2
    assert "'magic' is not one of zero_filled" in capsys.readouterr().err
    path = ["recon", "ct", "simulate"]
    top = build_parser(path)
    assert top.parse_args([*path, "O", "--doses", "0.25,0.1"]).doses == [0.25, 0.1]
    with pytest.raises(SystemExit):
        top.parse_args([*path, "O", "--doses", "0.25,2"])
    assert "2 is not in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "value", "dest"),
    [
        (["recon", "ct", "train"], "wgan", "model"),
        (["recon", "mri", "train"], "unet", "model"),
        (["segment", "plan", "D"], "segresnet", "network"),
        (["diagnose", "train", "D"], "densenet", "arch"),
    ],
)
def test_architecture_is_arch(path: list[str], value: str, dest: str) -> None:
    top = build_parser(path)
    assert getattr(top.parse_args([*path, "--arch", value]), dest) == value


def test_inference_verbs_default_to_auto_device() -> None:
    """One default everywhere: a GPU when there is one (as the Python API's load_model)."""
    for path, parser in _VERBS:
        for action in parser._actions:
            if "--device" in action.option_strings and action.default is not None:
                assert action.default == "auto", (path, action.default)


@pytest.mark.parametrize(
    "verb",
    [["segment", "train"], ["detect", "train"], ["detect", "train2d"], ["diagnose", "train"]],
)
def test_init_with_a_preset_is_refused_before_any_work(verb, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*verb, "--preset", "default", "--init", "default", "--out", str(out)]) == 2
    assert "--init fine-tunes on your DATASET" in capsys.readouterr().err
    assert not out.exists()
