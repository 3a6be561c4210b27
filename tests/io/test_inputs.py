"""The input layer: special files, declared sizes vs file and memory, complex data, CSV
encodings and unique case ids are refused or handled in one line."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest

from medimg.errors import ImageReadError, InputError
from medimg.io.inputs import (
    case_ids,
    check_allocation,
    check_declared_size,
    check_real,
    check_regular_file,
    read_csv_rows,
)
from medimg.tasks.cli_helpers import non_negative_int, positive_int


def test_a_fifo_is_refused_without_blocking(tmp_path) -> None:
    fifo = tmp_path / "slice.dcm"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        check_regular_file(fifo)


def test_allocation_beyond_the_budget_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("MEDIMG_MAX_MEMORY", "64M")
    assert check_allocation((100, 100, 100), np.float32) == 4_000_000
    with pytest.raises(InputError, match=r"needs 16.0 TiB.*MEDIMG_MAX_MEMORY"):
        check_allocation((2**14,) * 3, np.float32, what="the volume")
    with pytest.raises(InputError, match="must be positive"):
        check_allocation((10, 0, 3), np.float32)


def test_declared_size_must_fit_the_file(tmp_path) -> None:
    f = tmp_path / "x.nii"
    with pytest.raises(ImageReadError, match="truncated or its header is corrupt"):
        check_declared_size((64, 64, 64), np.int16, f, data_bytes=1000)
    check_declared_size((64, 64, 64), np.int16, f, data_bytes=1000, compressed=True)


def test_complex_data_is_refused() -> None:
    check_real(np.zeros(3, np.float32))
    with pytest.raises(InputError, match="complex"):
        check_real(np.zeros(3, np.complex64), "k.nii")


def test_csv_encoding_and_columns(tmp_path) -> None:
    good = tmp_path / "a.csv"
    good.write_bytes("\ufeffid,label\np01,1\n".encode())
    assert read_csv_rows(good, required=["id"]) == [{"id": "p01", "label": "1"}]
    bad = tmp_path / "b.csv"
    bad.write_bytes("id,label\np\xe9,1\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"not UTF-8 .*0xe9 at offset 10"):
        read_csv_rows(bad)
    with pytest.raises(InputError, match="lacks column"):
        read_csv_rows(good, required=["path"])


def test_case_ids_unique_from_relative_paths(tmp_path) -> None:
    assert case_ids([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]) == ["a", "b"]
    ids = case_ids([tmp_path / "A" / "p01.nii.gz", tmp_path / "B" / "p01.nii.gz"])
    assert ids == ["A__p01", "B__p01"]
    with pytest.raises(InputError, match="same case"):
        case_ids([tmp_path / "p01.nii.gz", tmp_path / "." / "p01.nii.gz"])


def test_count_arguments_refuse_negatives() -> None:
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    for parse, text in ((positive_int, "0"), (positive_int, "-2"), (non_negative_int, "x")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_case_ids_say_when_two_files_only_collide_by_name(tmp_path) -> None:
    with pytest.raises(InputError, match="names collide"):
        case_ids([tmp_path / "x.nii", tmp_path / "x.nii.gz"])


def test_real_valued_arguments_refuse_nan_and_out_of_range() -> None:
    from medimg.tasks.cli_helpers import finite_float, fraction, positive_float

    assert positive_float("0.5") == 0.5 and fraction("1") == 1.0 and finite_float("-2") == -2.0
    for parse, text in ((positive_float, "0"), (fraction, "1.5"), (finite_float, "nan")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_an_error_naming_a_file_with_a_line_break_stays_one_line() -> None:
    err = InputError("is not an image", "scan\n01.nii")
    assert str(err) == "scan\\n01.nii: is not an image" and err.path == "scan\n01.nii"
