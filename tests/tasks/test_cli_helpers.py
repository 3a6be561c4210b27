"""The argparse types every task CLI shares (:mod:`medimg.tasks.cli_helpers`)."""

from __future__ import annotations

import argparse

import pytest

from medimg.cli import main
from medimg.tasks.cli_helpers import probability


def test_probability_takes_both_ends_and_refuses_the_rest() -> None:
    assert probability("0") == 0.0 and probability("1") == 1.0 and probability("0.25") == 0.25
    for text in ("1.5", "-0.1", "nan", "inf", "half"):
        with pytest.raises(argparse.ArgumentTypeError):
            probability(text)


@pytest.mark.parametrize(
    "argv",
    [["diagnose", "evaluate", "p.csv", "m.csv", "--threshold", "1.5"],
     ["detect", "predict", "in", "out", "--seg", "nan"]],
)  # fmt: skip
def test_a_probability_option_out_of_range_is_an_argparse_error(argv) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
