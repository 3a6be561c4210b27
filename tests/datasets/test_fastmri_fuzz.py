"""Fuzzing the fastMRI reader: small valid files, mutated in structure, attributes, shapes and
dtypes; every mutant is either read (with a consistent result) or refused with MedimgError."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medimg.datasets.fastmri import check_fastmri, read_fastmri, write_fastmri
from medimg.errors import MedimgError

NAMES = ("kspace", "mask", "reconstruction_rss", "reconstruction_esc", "ismrmrd_header")
DTYPES = (np.complex64, np.complex128, np.float32, np.int16, np.bool_, np.uint8, "S4")
SHAPES = ((), (0,), (3,), (6,), (1, 6), (2, 6), (2, 8, 6), (0, 2, 8, 6), (2, 2, 8, 6),
          (1, 1, 1, 1), (2, 2, 8, 6, 1), (2, 3, 4))  # fmt: skip
HEADERS = (b"", b"<x/>", b"<ismrmrdHeader><encoding>", b"\xff\xfe", "<?xml version='1.0'?>")


def _base(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = (rng.standard_normal((2, 2, 8, 6)) + 1j * rng.standard_normal((2, 2, 8, 6))).astype(
        np.complex64
    )
    mask = np.zeros(6, bool)
    mask[2:4] = True
    write_fastmri(path, k * mask, mask=mask, recon_size=(4, 4), overwrite=True)


def _data(dtype, shape, fill: float) -> np.ndarray:
    if dtype == "S4":
        return np.full(shape, b"ab", dtype="S4")
    with np.errstate(invalid="ignore"):  # NaN cast to integers: whatever numpy makes of it
        return np.full(shape, fill).astype(dtype)


mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(
        st.just("replace"),
        st.sampled_from(NAMES),
        st.sampled_from(DTYPES),
        st.sampled_from(SHAPES),
        st.sampled_from([0.0, 1.0, np.nan, np.inf, -3.0]),
    ),
    st.tuples(st.just("group"), st.sampled_from(NAMES)),
    st.tuples(st.just("header"), st.sampled_from(HEADERS)),
    st.tuples(
        st.just("attr"),
        st.sampled_from(["acceleration", "max", "ismrmrd_header"]),
        st.sampled_from([np.void(b"\x00\x01"), b"\xff", np.arange(3), "text", np.nan]),
    ),
    st.tuples(st.just("huge"), st.sampled_from(NAMES)),
    st.tuples(st.just("truncate"), st.integers(0, 4000)),
)


def _mutate(path: Path, m: tuple) -> None:
    kind = m[0]
    if kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: min(m[1], len(data) - 1)])
        return
    try:
        f = h5py.File(path, "a")
    except OSError:  # already truncated: no further structure to change
        return
    with f:
        if kind in ("delete", "replace", "group", "header", "huge") and kind != "header":
            if m[1] in f:
                del f[m[1]]
        if kind == "replace":
            f.create_dataset(m[1], data=_data(m[2], m[3], m[4]))
        elif kind == "group":
            f.create_group(m[1])
        elif kind == "header":
            if "ismrmrd_header" in f:
                del f["ismrmrd_header"]
            f["ismrmrd_header"] = np.bytes_(m[1]) if isinstance(m[1], bytes) else m[1]
        elif kind == "attr":
            try:
                f.attrs[m[1]] = m[2]
            except (TypeError, ValueError):  # not storable as an HDF5 attribute: no mutant
                pass
        elif kind == "huge":
            f.create_dataset(m[1], shape=(2**20, 2**10, 2**12, 2**12), dtype=np.complex64,
                             chunks=(1, 1, 8, 8))  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(mutation, min_size=1, max_size=3), seed=st.integers(0, 3),
       part=st.sampled_from([None, 0, 1, slice(0, 1), 5]))  # fmt: skip
def test_mutated_files_are_read_or_refused_in_one_line(mutations, seed, part) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.h5"
        _base(path, seed)
        for m in mutations:
            _mutate(path, m)
        for read in (lambda: check_fastmri(path), lambda: read_fastmri(path, slices=part)):
            try:
                vol = read()
            except MedimgError as err:
                assert "\n" not in str(err) and str(err)
                continue
            if isinstance(vol, tuple):  # check_fastmri: the k-space shape
                assert len(vol) in (3, 4) and min(vol) > 0
                continue
            assert vol.kspace.ndim in (3, 4) and vol.kspace.dtype == np.complex64
            assert vol.kspace.size > 0 and np.isfinite(vol.kspace).all()
            assert vol.mask is None or (
                vol.mask.shape[-1] == vol.kspace.shape[-1] and vol.mask.any()
            )
            if vol.reconstruction is not None:
                assert len(vol.reconstruction) == len(vol.kspace)
