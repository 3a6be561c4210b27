"""Hostile inputs to the readers and to ``medimg info`` / ``medimg convert``.

Every bad file ends in one ``error: <file>: ...`` line with exit code 2: never a hang, a
traceback, an "internal error" or a memory blow-up. Reads that could block run under a deadline
(``signal.alarm``), so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_factory import make_slice, random_volume, write_series
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medimg import cli
from medimg.errors import ImageReadError, InputError, MedimgError
from medimg.io.api import describe, load, save
from medimg.io.dicom.write import write_dicom_series
from medimg.io.image import Image

SMALL = (3, 4, 5)


@contextlib.contextmanager
def deadline(seconds: int = 10) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging: SIGALRM interrupts a blocked open()/read()."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (blocked on a special file?)")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with deadline():
        code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, path: Path | str) -> str:
    line = err.strip()
    assert code == 2, err
    assert "\n" not in line and line.startswith("error:"), err
    assert "internal error" not in line and "Traceback" not in line
    assert str(path) in line, f"the error does not name {path}: {line}"
    return line


def _small_nifti(path: Path) -> Path:
    data = np.arange(np.prod(SMALL), dtype=np.float32).reshape(SMALL)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.6, 0.7, 1.0])), path)
    return path


def _header_only(path: Path, header: nib.Nifti1Header, payload: bytes = b"\0" * 64) -> Path:
    """A NIfTI file whose header says what we like, followed by a few bytes of data."""
    header["vox_offset"] = len(header.binaryblock) + 4
    raw = header.binaryblock + b"\0" * 4 + payload
    (gzip.open if path.name.endswith(".gz") else open)(path, "wb").write(raw)
    return path


# ------------------------------------------------------------------ special files (FIFO)
def test_fifo_in_a_dicom_folder_is_skipped_and_counted(tmp_path, capsys) -> None:
    folder = tmp_path / "series"
    write_series(folder, random_volume())
    os.mkfifo(folder / "zz.dcm")
    code, out, _ = run_cli(capsys, "info", folder)
    assert code == 0
    assert "7x9x5 voxels" in out and "skipped 1" in out and "zz.dcm" in out
    with deadline():
        assert load(folder).spatial_shape == (7, 9, 5)


@pytest.mark.parametrize("name", ["pipe.dcm", "pipe.nii.gz", "pipe.mha", "pipe"])
def test_fifo_given_as_the_image_is_refused(tmp_path, capsys, name) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    for call in (load, describe):
        with deadline(), pytest.raises(ImageReadError, match="not a regular file"):
            call(fifo)
    code, _, err = run_cli(capsys, "convert", fifo, tmp_path / "out.nii.gz")
    assert_one_line_error(code, err, fifo)
    assert not (tmp_path / "out.nii.gz").exists()


def test_fifo_as_the_data_file_of_a_detached_header(tmp_path) -> None:
    os.mkfifo(tmp_path / "data.raw")
    hdr = tmp_path / "x.nhdr"
    hdr.write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: data.raw\n"
    )
    with deadline(), pytest.raises(ImageReadError, match="not a regular file"):
        load(hdr)


def test_unreadable_dicom_file_is_not_called_corrupt(tmp_path, monkeypatch) -> None:
    from medimg.io.dicom import headers

    path = tmp_path / "locked.dcm"
    make_slice(np.zeros((4, 4), np.int16)).save_as(path, enforce_file_format=True)

    def denied(p, **kwargs):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(headers.pydicom, "dcmread", denied)  # root can read a chmod 000 file
    with pytest.raises(ImageReadError, match="permissions") as err:
        load(path)
    assert "corrupt" not in str(err.value)


# ------------------------------------------------------------------ huge declared sizes
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(
    ("header_type", "side"), [(nib.Nifti1Header, 32767), (nib.Nifti2Header, 100000)]
)
def test_huge_nifti_header_refused_before_allocating(tmp_path, header_type, side, suffix) -> None:
    h = header_type()
    h.set_data_shape((side, side, side))
    h.set_data_dtype(np.float32)
    path = _header_only(tmp_path / f"huge{suffix}", h)
    with pytest.raises(MedimgError, match=f"{side}x{side}x{side}") as err:
        load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_nifti_declaring_more_than_the_file_holds_is_truncated(tmp_path) -> None:
    h = nib.Nifti1Header()
    h.set_data_shape((100, 100, 10))
    h.set_data_dtype(np.int16)
    path = _header_only(tmp_path / "short.nii", h)
    with pytest.raises(ImageReadError, match="truncated"):
        load(path)


def test_memory_budget_refuses_a_consistent_but_large_image(tmp_path, monkeypatch) -> None:
    path = _small_nifti(tmp_path / "ok.nii.gz")
    monkeypatch.setenv("MEDIMG_MAX_MEMORY", "100")  # bytes: less than 60 float32 voxels
    with pytest.raises(MedimgError, match="MEDIMG_MAX_MEMORY"):
        load(path)
    monkeypatch.setenv("MEDIMG_MAX_MEMORY", "1M")
    assert load(path).spatial_shape == SMALL


@pytest.mark.parametrize("attrs", [{"Rows": 65535, "Columns": 65535}, {"Rows": 0}])
def test_dicom_rows_columns_beyond_the_pixel_data(tmp_path, attrs) -> None:
    ds = make_slice(np.zeros((4, 4), np.int16))
    for key, value in attrs.items():
        setattr(ds, key, value)
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError) as err:
        load(path)
    assert str(path) in str(err.value)
    folder = tmp_path / "folder"
    folder.mkdir()
    path.rename(folder / "big.dcm")
    with pytest.raises(ImageReadError, match=r"big\.dcm"):
        load(folder)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("SamplesPerPixel", [1, 3]), ("BitsAllocated", 7), ("PixelRepresentation", 2),
     ("BitsStored", 20), ("Columns", [4, 4])],
)  # fmt: skip
def test_dicom_pixel_attributes_that_make_no_sense(tmp_path, keyword, value) -> None:
    ds = make_slice(np.zeros((4, 4), np.int16))
    setattr(ds, keyword, value)
    path = tmp_path / "odd.dcm"
    ds.save_as(path, enforce_file_format=True)
    for call in (load, describe):
        with pytest.raises(ImageReadError, match=keyword) as err:
            call(path)
        assert str(err.value).startswith(str(path))


def test_dicom_value_pydicom_cannot_convert_names_the_file(tmp_path, capsys) -> None:
    folder = tmp_path / "study"
    write_series(folder / "good", random_volume())
    bad = folder / "bad.dcm"
    make_slice(np.zeros((4, 4), np.int16), series="other").save_as(bad, enforce_file_format=True)
    raw = bad.read_bytes()
    tag = b"\x08\x00\x60\x00CS"  # Modality, explicit VR: give it an unknown VR
    assert raw.count(tag) == 1
    bad.write_bytes(raw.replace(tag, b"\x08\x00\x60\x00C\xcb"))
    with pytest.raises(ImageReadError, match="Value Representation") as err:
        load(bad)
    assert str(err.value).startswith(str(bad))
    code, out, _ = run_cli(capsys, "info", folder)
    assert code == 0 and "7x9x5 voxels" in out and "skipped 1" in out and "bad.dcm" in out


def test_dicom_number_of_frames_beyond_the_file(tmp_path) -> None:
    ds = make_slice(np.zeros((4, 4), np.int16))
    ds.NumberOfFrames = 2**31 - 1
    path = tmp_path / "frames.dcm"
    ds.save_as(path, enforce_file_format=True)
    for call in (load, describe):
        with deadline(), pytest.raises(ImageReadError, match="NumberOfFrames is 2147483647"):
            call(path)


@pytest.mark.parametrize(
    ("name", "header"),
    [
        (
            "huge.mha",
            (
                b"ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
                b"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
            ),
        ),
        (
            "neg.mha",
            (
                b"ObjectType = Image\nNDims = 3\nDimSize = -5 4 3\n"
                b"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
            ),
        ),
        (
            "huge.nrrd",
            (
                b"NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\n"
                b"encoding: raw\nendian: little\n\n"
            ),
        ),
        (
            "short.nrrd",
            (
                b"NRRD0004\ntype: float\ndimension: 3\nsizes: 100 100 100\n"
                b"encoding: raw\nendian: little\n\n"
            ),
        ),
    ],
)
def test_itk_header_sizes_checked_before_reading(tmp_path, name, header) -> None:
    path = tmp_path / name
    path.write_bytes(header + b"\0" * 100)
    with pytest.raises(MedimgError) as err:
        load(path)
    msg = str(err.value)
    assert str(path) in msg and ("truncated" in msg or "needs" in msg), msg


def test_itk_headers_that_made_itk_spin_are_refused_quickly(tmp_path) -> None:
    """MetaIO loops or allocates per declared dimension (also when NDims is given twice), and
    ITK's reader spun on a direction matrix holding 1e308, inside C++ where no alarm can
    interrupt them: the reads run in a child process with a deadline."""
    mha = tmp_path / "ndims.mha"
    mha.write_bytes(
        b"ObjectType = Image\nNDims = 4294967296\nDimSize = 5 4 3\n"
        b"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n" + b"\0" * 240
    )
    nrrd = tmp_path / "dims.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: float\ndimension: 65535\nsizes: 5 4 3\nencoding: raw\n"
                     b"endian: little\n\n" + b"\0" * 240)  # fmt: skip
    matrix = tmp_path / "matrix.mha"
    matrix.write_bytes(
        b"ObjectType = Image\nNDims = 2\nTransformMatrix = 1 0 1e308 1\nDimSize = 5 4\n"
        b"ElementNumberOfChannels = 3\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
        + b"\0"
        * 60
    )
    code = (
        "import sys; from medimg.cli import main; "
        "sys.exit(max(main(['info', a]) for a in sys.argv[1:]))"
    )
    twice = tmp_path / "twice.mha"  # the checks read the first NDims, MetaIO the last
    twice.write_bytes(
        b"ObjectType = Image\nNDims = 2\nNDims = 1e308\nDimSize = 5 4\n"
        b"ElementNumberOfChannels = 3\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
        + b"\0"
        * 60
    )
    files = [str(mha), str(nrrd), str(matrix), str(twice)]
    done = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 4, done.stderr
    assert "dimensions" in lines[0] and "dimensions" in lines[1] and "direction" in lines[2]
    assert "more than once" in lines[3]


# ------------------------------------------------------------------ RGB NIfTI
@pytest.mark.parametrize("fields", ["RGB", "RGBA"])
def test_rgb_nifti_read_as_channels(tmp_path, capsys, fields) -> None:
    dtype = [(f, "u1") for f in fields]
    data = np.zeros(SMALL, dtype=dtype)
    for i, f in enumerate(fields):
        data[f] = np.arange(np.prod(SMALL)).reshape(SMALL) % 200 + i
    path = tmp_path / "colour.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    image = load(path)
    assert image.array.shape == (len(fields), *SMALL) and image.array.dtype == np.float32
    for i, f in enumerate(fields):
        np.testing.assert_array_equal(image.array[i], data[f])
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0 and f"({len(fields)}, 3, 4, 5)" in out
    code, _, err = run_cli(capsys, "convert", path, tmp_path / "colour.nrrd")
    assert code == 0, err
    assert load(tmp_path / "colour.nrrd").num_channels == len(fields)


def test_itk_rgb_pixels_become_channels(tmp_path, capsys) -> None:
    import SimpleITK as sitk

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)  # (Y, X, C) as ITK holds it
    path = tmp_path / "colour.mha"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    image = load(path)
    assert image.array.shape == (3, 5, 4) and image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[1], rgb[:, :, 1].T)
    code, _, err = run_cli(capsys, "convert", path, tmp_path / "colour.nii.gz")
    assert code == 0, err


# ------------------------------------------------------------------ deflated DICOM
def test_deflated_dicom_is_read(tmp_path) -> None:
    pixels = random_volume((6, 5, 1))[:, :, 0].T.copy()
    ds = make_slice(pixels)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    image = load(path)
    np.testing.assert_array_equal(image.array[0, :, :, 0], pixels.T)
    folder = tmp_path / "series"
    folder.mkdir()
    path.rename(folder / "deflated.dcm")
    np.testing.assert_array_equal(load(folder).array[0, :, :, 0], pixels.T)


# ------------------------------------------------------------------ geometry errors name the file
@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"iop": (0, 0, 0, 0, 0, 0)}, "zero vector"),
        ({"iop": (1, 0, 0, 1, 0, 0)}, "parallel"),
        ({"pixel_spacing": (0.0, 1.0)}, "PixelSpacing"),
        ({"pixel_spacing": (-1.0, 1.0)}, "PixelSpacing"),
    ],
)
def test_singular_dicom_geometry_names_the_file(tmp_path, capsys, kwargs, text) -> None:
    path = tmp_path / "odd.dcm"
    make_slice(np.zeros((4, 4), np.int16), **kwargs).save_as(path, enforce_file_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN arithmetic on the way to the error
        with pytest.raises(ImageReadError, match=text) as err:
            load(path)
    assert str(err.value).startswith(str(path))
    folder = tmp_path / "series"
    write_series(
        folder, random_volume((4, 4, 3)), **kwargs, positions=[(0, 0, k) for k in range(3)]
    )
    code, _, err_text = run_cli(capsys, "convert", folder, tmp_path / "o.nii.gz")
    line = assert_one_line_error(code, err_text, folder)
    assert ".dcm" in line and text in line
    code, _, err_text = run_cli(capsys, "info", folder)
    assert text in assert_one_line_error(code, err_text, folder)


def test_dicom_error_raised_without_a_path_gets_the_source(tmp_path, monkeypatch) -> None:
    from medimg.errors import GeometryError
    from medimg.io.dicom import read

    folder = tmp_path / "series"
    write_series(folder, random_volume())

    def no_path(*args, **kwargs):
        raise GeometryError("slices disagree")  # as a helper deep down might

    monkeypatch.setattr(read, "build_grid", no_path)
    with pytest.raises(GeometryError) as err:
        load(folder)
    assert str(err.value) == f"{folder}: slices disagree"


# ------------------------------------------------------------------ warnings
def _warn_from(module: str, category: type[Warning], text: str):
    """A function whose warnings are attributed to ``module`` (as if raised there)."""
    namespace = {"__name__": module, "warnings": warnings, "category": category, "text": text}
    exec("def emit(*a, **k):\n    warnings.warn(text, category, stacklevel=1)\n    return ['ok']",
         namespace)  # fmt: skip
    return namespace["emit"]


def _info_warnings(capsys) -> tuple[int, str, str, list]:
    """Run ``medimg info`` recording any warning that escapes the CLI (instead of pytest)."""
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, "info", "x.nii.gz")
    return code, out, err, escaped


def test_third_party_warnings_hidden_and_own_warnings_one_line(monkeypatch, capsys) -> None:
    import medimg.io.api as api

    monkeypatch.delenv("MEDIMG_DEBUG", raising=False)
    monkeypatch.setattr(api, "describe", _warn_from("nibabel.fake", UserWarning, "noise"))
    code, out, err, escaped = _info_warnings(capsys)
    assert code == 0 and out.strip() == "ok" and err == "" and escaped == []
    monkeypatch.setattr(api, "describe", _warn_from("numpy.fake", RuntimeWarning, "NaN math"))
    assert _info_warnings(capsys)[2:] == ("", [])
    monkeypatch.setattr(api, "describe", _warn_from("medimg.io.fake", UserWarning, "be\ncareful"))
    code, out, err, escaped = _info_warnings(capsys)
    assert code == 0 and err == "warning: be careful\n" and escaped == []
    monkeypatch.setenv("MEDIMG_DEBUG", "1")  # then nothing is filtered
    monkeypatch.setattr(api, "describe", _warn_from("nibabel.fake", UserWarning, "noise"))
    assert [str(w.message) for w in _info_warnings(capsys)[3]] == ["noise"]


def test_native_panic_is_one_internal_error_line(monkeypatch, capsys) -> None:
    import medimg.io.api as api

    class PanicException(BaseException):  # what pyo3 raises for a Rust panic
        pass

    def panic(path):
        raise PanicException("index out of bounds:\n  the len is 24")

    monkeypatch.delenv("MEDIMG_DEBUG", raising=False)
    monkeypatch.setattr(api, "describe", panic)
    code, _, err = run_cli(capsys, "info", "x.nii.gz")
    assert code == 1 and err.count("\n") == 1 and "PanicException: index out of bounds" in err


def test_real_library_warnings_do_not_reach_stderr(tmp_path, capfd, monkeypatch) -> None:
    monkeypatch.delenv("MEDIMG_DEBUG", raising=False)
    h = nib.Nifti1Header()
    h.set_data_shape((2, 2, 2))
    h.set_data_dtype(np.float32)
    h.set_sform(np.diag([np.nan, 1, 1, 1]), 1)  # numpy warns on the NaN determinant
    nan_affine = _header_only(tmp_path / "nan.nii", h)
    empty_mha = tmp_path / "empty.mha"
    empty_mha.write_bytes(b"ObjectType = Image\n")  # MetaIO prints its parse notes on stderr
    odd_vr = Path(get_testdata_file("SC_rgb_jpeg.dcm"))  # pydicom warns about its VR
    for path in (nan_affine, empty_mha, odd_vr):
        with deadline(), warnings.catch_warnings(record=True) as escaped:
            warnings.simplefilter("always")
            code = cli.main(["info", str(path)])
        err = capfd.readouterr().err
        assert_one_line_error(code, err, path)
        assert escaped == []


def test_nibabel_header_fix_notes_hidden(tmp_path, capfd, monkeypatch) -> None:
    monkeypatch.delenv("MEDIMG_DEBUG", raising=False)
    h = nib.Nifti1Header()
    h.set_data_shape((2, 2, 2))
    h.set_data_dtype(np.float32)
    h["sform_code"] = 300  # nibabel logs "sform_code 300 not valid; setting to 0"
    path = _header_only(tmp_path / "code.nii", h)
    with deadline():
        assert cli.main(["info", str(path)]) == 0
    out, err = capfd.readouterr()
    assert "code.nii" in out and err == ""


def test_itk_warning_display_switched_off(tmp_path) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(True)
    path = tmp_path / "x.nrrd"
    save(Image(np.zeros((1, *SMALL), np.float32)), path)
    load(path)
    assert not sitk.ProcessObject.GetGlobalWarningDisplay()


def test_error_naming_a_file_with_a_line_break_stays_one_line(tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "info", tmp_path / "a\nb.nii")
    assert code == 2 and err.count("\n") == 1 and "a\\nb.nii" in err


# ------------------------------------------------------------------ empty output, modality
def test_empty_output_refused(tmp_path, capsys, monkeypatch) -> None:
    src = _small_nifti(tmp_path / "ct.nii.gz")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(InputError, match="empty"):
        save(load(src), "")
    code, _, err = run_cli(capsys, "convert", src, "")
    assert code == 2 and err.startswith("error:") and "empty" in err
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("modality", ["CT\nX", "A" * 17, "C-T", " ", "ct;rm -rf"])
def test_modality_must_be_a_dicom_code_string(tmp_path, capsys, modality) -> None:
    src = _small_nifti(tmp_path / "ct.nii.gz")
    image = load(src)
    with pytest.raises(InputError, match="modality"):
        write_dicom_series(image, tmp_path / "series", modality=modality)
    image.modality = modality
    with pytest.raises(InputError, match="modality"):
        save(image, tmp_path / "series")
    code, _, err = run_cli(capsys, "convert", src, tmp_path / "dcm", "--modality", modality)
    assert code == 2 and err.count("\n") == 1 and "modality" in err
    assert not (tmp_path / "series").exists() and not (tmp_path / "dcm").exists()


def test_valid_modality_written_upper_case(tmp_path, capsys) -> None:
    src = _small_nifti(tmp_path / "ct.nii.gz")
    code, _, err = run_cli(capsys, "convert", src, tmp_path / "dcm", "--modality", "pt")
    assert code == 0, err
    assert pydicom.dcmread(next((tmp_path / "dcm").glob("*.dcm"))).Modality == "PT"


# ------------------------------------------------------------------ other bad files
def _bad_files(tmp: Path) -> dict[str, Path]:
    ok = _small_nifti(tmp / "ok.nii")
    nib.save(nib.load(ok), tmp / "ok.nii.gz")
    files = {
        "zero-byte .nii": tmp / "zero.nii",
        "zero-byte .nii.gz": tmp / "zero.nii.gz",
        "zero-byte .nrrd": tmp / "zero.nrrd",
        "zero-byte .mha": tmp / "zero.mha",
        "zero-byte .dcm": tmp / "zero.dcm",
    }
    for p in files.values():
        p.write_bytes(b"")
    (tmp / "x.nii.gz").mkdir()
    files["folder named x.nii.gz"] = tmp / "x.nii.gz"
    files["not gzip"] = tmp / "notgz.nii.gz"
    files["not gzip"].write_bytes(ok.read_bytes())
    files["truncated .nii"] = tmp / "trunc.nii"
    files["truncated .nii"].write_bytes(ok.read_bytes()[:360])
    files["truncated .nii.gz"] = tmp / "trunc.nii.gz"
    files["truncated .nii.gz"].write_bytes((tmp / "ok.nii.gz").read_bytes()[:-12])
    nrrd = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 5 2 2\nencoding: raw\n"
    for key, name, datafile in [
        ("missing data file", "missing.nhdr", "nothere.raw"),
        ("absolute data file", "passwd.nhdr", "/etc/passwd"),
        ("data file above", "above.nhdr", "../../../../etc/passwd"),
        ("data file list", "list.nhdr", "LIST"),
        ("data file pattern", "pattern.nhdr", "slice%03d.raw 1 10 1"),
    ]:
        files[key] = tmp / name
        files[key].write_text(nrrd + f"data file: {datafile}\n")
    mha = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
    files["MetaImage LIST"] = tmp / "list.mhd"
    files["MetaImage LIST"].write_text(mha + "ElementDataFile = LIST\na.raw\nb.raw\n")
    files["MetaImage outside"] = tmp / "outside.mhd"
    files["MetaImage outside"].write_text(mha + "ElementDataFile = ../secret.raw\n")
    for key, spacing in (("NaN spacing", "nan 1 1"), ("zero spacing", "0 1 1")):
        files[key] = tmp / f"{key.split()[0]}.mha"
        files[key].write_bytes(
            f"{mha}ElementSpacing = {spacing}\nElementDataFile = LOCAL\n".encode() + b"\0" * 8
        )
    h = nib.Nifti1Header()
    h.set_data_shape((2, 2, 2))
    h.set_data_dtype(np.float32)
    h["pixdim"][1] = np.nan
    files["NaN pixdim"] = _header_only(tmp / "nanpix.nii", h)
    files["garbage after DICM"] = tmp / "garbage.dcm"
    files["garbage after DICM"].write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 2)
    return files


def test_bad_files_give_one_line_errors(tmp_path, capsys) -> None:
    for what, path in _bad_files(tmp_path).items():
        for argv in (["info", path], ["convert", path, tmp_path / "out.nii.gz"]):
            code, _, err = run_cli(capsys, *argv)
            try:
                assert_one_line_error(code, err, path)
            except AssertionError as e:
                raise AssertionError(f"{what}: {e}") from None
        assert not (tmp_path / "out.nii.gz").exists()
