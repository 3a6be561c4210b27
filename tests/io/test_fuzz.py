"""Fuzzing the readers: mutated files either load or are refused with a MedimgError.

Hypothesis drives the mutation recipes of ``bench/fuzz.py`` (byte flips, boundary integers,
truncation, deletion, insertion, duplicated chunks, header-field edits) over small valid
NIfTI-1/NIfTI-2/NRRD/MetaImage/DICOM seeds, and arbitrary bytes through the CSV reader. Any
other exception, or a read still running after a few seconds, fails the test. The longer run
(10,000+ files, in worker processes) is ``bench/fuzz.py``.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import signal
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medimg.errors import MedimgError
from medimg.io.api import describe, load
from medimg.io.inputs import read_csv_rows

_spec = importlib.util.spec_from_file_location(
    "medimg_bench_fuzz", Path(__file__).parents[2] / "bench" / "fuzz.py"
)
fuzz = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules[_spec.name] = fuzz  # dataclasses look their module up there
_spec.loader.exec_module(fuzz)  # type: ignore[union-attr]

#: One seed per format family (the bench script runs all 20 seeds).
FORMATS = ["nifti1", "nifti2-gz", "nrrd", "nhdr", "mha-zlib", "dicom-file", "dicom-series",
           "dicom-multiframe", "dicom-rle", "dicom-enhanced"]  # fmt: skip
#: Cases the bench run found, kept as regression tests (seed, recipe, what went wrong).
FOUND = [
    ("dicom-rle", [(7, 3521210870, 174451975), (7, 564997185, 2321605388),
                   (6, 3623489257, 4062470641), (7, 3091642722, 2034013570)],
     "the RLE codec panicked (a BaseException) and printed a Rust backtrace"),
    ("nrrd", [(1, 2250475818, 1916481649), (1, 3884957810, 1600142026),
              (0, 3964974274, 4119016165), (2, 4107062276, 3812826781)],
     "a unicode digit in the dimension field reached int()"),
]  # fmt: skip
EXAMPLES = 60
TIME_LIMIT_S = 10
_counter = itertools.count()

steps = st.lists(
    st.tuples(st.integers(0, fuzz.N_OPS - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    min_size=1,
    max_size=4,
)
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, object]:
    return {s.name: s for s in fuzz.write_seeds(tmp_path_factory.mktemp("seeds"))}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cases")


def _alarm(signum, frame):
    raise TimeoutError(f"a read ran for more than {TIME_LIMIT_S} s (a hang?)")


def _read_or_refuse(path: Path) -> None:
    """``load`` and ``describe`` succeed or raise MedimgError; anything else propagates."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library notes on damaged files are not failures
            for call in (load, describe):
                try:
                    call(path)
                except MedimgError as e:
                    assert "\n" not in str(e)
                    return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_seeds_are_valid(seeds, cases) -> None:
    for name, seed in seeds.items():
        path = fuzz.write_case(seed, fuzz.mutate(seed, []), cases / f"seed-{name}")
        load(path)
        assert describe(path)


@pytest.mark.parametrize(("fmt", "recipe", "problem"), FOUND)
def test_cases_found_by_the_bench_run(
    seeds, cases, capfd, monkeypatch, fmt, recipe, problem
) -> None:
    monkeypatch.delenv("MEDIMG_DEBUG", raising=False)
    path = fuzz.write_case(seeds[fmt], fuzz.mutate(seeds[fmt], recipe), cases / f"{next(_counter)}")
    with pytest.raises(MedimgError):
        load(path)
    assert capfd.readouterr().err == "", problem


@pytest.mark.parametrize("fmt", FORMATS)
@fuzz_settings
@given(recipe=steps)
def test_mutated_files_load_or_are_refused(seeds, cases, fmt, recipe) -> None:
    seed = seeds[fmt]
    logging.disable(logging.CRITICAL)  # nibabel logs its header fixes
    try:
        path = fuzz.write_case(seed, fuzz.mutate(seed, recipe), cases / f"{next(_counter)}")
        _read_or_refuse(path)
    finally:
        logging.disable(logging.NOTSET)


@fuzz_settings
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(st.lists(st.text(max_size=8), max_size=4), max_size=6).map(
            lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")
        ),
    )
)
def test_csv_reader_reads_or_refuses(cases, data) -> None:
    path = cases / f"{next(_counter)}.csv"
    path.write_bytes(data)
    try:
        rows = read_csv_rows(path, required=["case"])
    except MedimgError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert all("case" in row for row in rows)
