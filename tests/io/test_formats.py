"""NIfTI / NRRD / MetaImage: write -> read round trips and bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medimg.errors import ImageReadError, InputError, OutputExistsError
from medimg.io.formats import read_itk, read_nifti, write_itk, write_nifti
from medimg.io.image import Image

EXTS = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]


def _io(ext: str):
    return (read_nifti, write_nifti) if ext.startswith(".nii") else (read_itk, write_itk)


def _roundtrip(image: Image, tmp_path, ext: str, **read_kw) -> Image:
    read, write = _io(ext)
    path = write(image, tmp_path / f"img{ext}")
    assert path.is_file()
    return read(path, **read_kw)


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("ext", EXTS)
def test_oblique_anisotropic_float_roundtrip(tmp_path, ext, mr_image):
    back = _roundtrip(mr_image, tmp_path, ext, modality="MR")
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, mr_image.array)
    np.testing.assert_allclose(back.affine, mr_image.affine, rtol=0, atol=1e-5)
    assert back.spacing == pytest.approx((0.7, 0.9, 2.5), abs=1e-5)
    assert back.modality == "MR" and not back.is_label


@pytest.mark.parametrize("ext", EXTS)
def test_left_handed_affine_roundtrip(tmp_path, ext, mr_image, left_handed_affine):
    image = Image(mr_image.array, left_handed_affine)
    back = _roundtrip(image, tmp_path, ext)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, left_handed_affine, rtol=0, atol=1e-5)


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize(
    "shape", [(3, 7, 9, 5), (1, 7, 9), (2, 7, 9)], ids=["3d-c3", "2d", "2d-c2"]
)
def test_channels_and_2d_roundtrip(tmp_path, ext, shape, oblique_affine):
    data = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    affine = oblique_affine.copy()
    if len(shape) == 3 and not ext.startswith(".nii"):
        # ITK's 2D geometry: in-plane rotation and anisotropic spacing, in the z = 0 plane
        affine[:3, :3] = [[0.6, -0.45, 0], [0.35, 0.78, 0], [0, 0, 1]]
        affine[2, 3] = 0.0
    image = Image(data, affine)
    back = _roundtrip(image, tmp_path, ext)
    assert back.array.shape == shape
    np.testing.assert_array_equal(back.array, data)
    # the third column of a 2D image (slice normal) is kept by NIfTI only
    cols = [0, 1, 3] if len(shape) == 3 and not ext.startswith(".nii") else [0, 1, 2, 3]
    np.testing.assert_allclose(back.affine[:, cols], affine[:, cols], rtol=0, atol=1e-5)


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_oblique_2d_refused_by_itk(tmp_path, ext, oblique_affine):
    image = Image(np.zeros((1, 7, 9), np.float32), oblique_affine)
    with pytest.raises(InputError, match="slice axis") as err:
        write_itk(image, tmp_path / f"a{ext}")
    assert str(tmp_path) in _one_line(err)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32])
def test_label_dtype_kept(tmp_path, ext, dtype, label_image):
    data = label_image.array.astype(dtype) * (300 if dtype != np.uint8 else 1)
    if np.issubdtype(dtype, np.signedinteger):
        data[0, 0, 1, 0] = -3  # negative labels (e.g. "ignore") survive too
    image = Image(data, label_image.affine, is_label=True)
    back = _roundtrip(image, tmp_path, ext, is_label=True)
    assert back.is_label and back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, data)


@pytest.mark.parametrize("ext", EXTS)
def test_int64_labels_narrowed(tmp_path, ext, label_image):
    data = label_image.array.astype(np.int64) * 100  # numpy's default int type, values <= 500
    back = _roundtrip(Image(data, label_image.affine, is_label=True), tmp_path, ext, is_label=True)
    assert back.array.dtype == np.uint16
    np.testing.assert_array_equal(back.array, data)


def test_nifti_refuses_values_beyond_int32(tmp_path, label_image):
    data = label_image.array.astype(np.int64) * 2**40
    with pytest.raises(InputError, match="32-bit"):
        write_nifti(Image(data, label_image.affine, is_label=True), tmp_path / "a.nii")
    back = _roundtrip(Image(data, label_image.affine, is_label=True), tmp_path, ".nrrd",
                      is_label=True)  # fmt: skip
    np.testing.assert_array_equal(back.array, data)


@pytest.mark.parametrize("ext", [".nii.gz", ".mha"])
def test_integer_intensity_read_as_float32(tmp_path, ext, ct_image):
    image = ct_image.with_array(ct_image.array.astype(np.int16))
    back = _roundtrip(image, tmp_path, ext, modality="CT")
    assert back.array.dtype == np.float32 and back.modality == "CT"
    np.testing.assert_array_equal(back.array, ct_image.array)


def test_float_label_file_becomes_integer(tmp_path, label_image):
    path = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(label_image.array[0].astype(np.float32), label_image.affine), path)
    back = read_nifti(path, is_label=True)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, label_image.array)
    nib.save(nib.Nifti1Image(np.full((3, 4, 5), 0.5, np.float32), np.eye(4)), path)
    with pytest.raises(ImageReadError, match="non-integer"):
        read_nifti(path, is_label=True)


def test_nifti_sform_preferred_over_qform(tmp_path, oblique_affine):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    img.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    img.set_sform(oblique_affine, code=2)
    nib.save(img, tmp_path / "both.nii")
    np.testing.assert_allclose(read_nifti(tmp_path / "both.nii").affine, oblique_affine, atol=1e-5)
    img.set_sform(oblique_affine, code=0)  # sform unset: the qform counts
    nib.save(img, tmp_path / "q.nii")
    np.testing.assert_allclose(read_nifti(tmp_path / "q.nii").affine, np.diag([2.0, 2, 2, 1]))


def test_nifti_scaled_int_file_gives_scaled_floats(tmp_path):
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "s.nii")
    back = read_nifti(tmp_path / "s.nii")
    np.testing.assert_allclose(back.array[0], np.arange(60).reshape(3, 4, 5) * 0.5 - 10.0)


@pytest.mark.parametrize("kind", ["pair", "mgz"])
def test_nibabel_pair_and_mgh_read_with_geometry(tmp_path, kind, oblique_affine):
    """NIfTI .hdr/.img pairs and FreeSurfer .mgz read like .nii (values and affine kept)."""
    from medimg.io.api import load

    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    if kind == "pair":
        path = tmp_path / "vol.hdr"
        nib.save(nib.Nifti1Pair(data, oblique_affine), path)
    else:
        path = tmp_path / "vol.mgz"
        nib.save(nib.MGHImage(data, oblique_affine), path)
    img = load(path)
    np.testing.assert_array_equal(img.array[0], data)
    np.testing.assert_allclose(img.affine, oblique_affine, atol=1e-4)


def test_cifti_is_refused_in_one_line():
    from medimg.io.api import load

    path = Path(nib.__file__).parent / "tests" / "data" / "row_major.dconn.nii"
    if not path.is_file():
        pytest.skip("nibabel's wheel ships no CIFTI test file")
    with pytest.raises(ImageReadError, match="no voxel grid") as err:
        load(path)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("ext", EXTS)
def test_overwrite_refused_file_untouched(tmp_path, ext, mr_image):
    read, write = _io(ext)
    path = write(mr_image, tmp_path / f"img{ext}")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other = mr_image.with_array(mr_image.array + 1)
    with pytest.raises(OutputExistsError) as err:
        write(other, path)
    assert str(path) in _one_line(err) and "overwrite" in str(err.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no stray temp files
    write(other, path, overwrite=True)
    np.testing.assert_array_equal(read(path).array, other.array)


@pytest.mark.parametrize("ext, data_file", [(".mhd", "img.zraw"), (".nhdr", "img.raw.gz")])
def test_detached_data_file_not_clobbered(tmp_path, ext, data_file, mr_image):
    (tmp_path / data_file).write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match=data_file):
        write_itk(mr_image, tmp_path / f"img{ext}")
    assert (tmp_path / data_file).read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == [data_file]


@pytest.mark.parametrize("name", ["img.png", "img.nii.bz2", "img"])
def test_unknown_extension(tmp_path, name, mr_image):
    (tmp_path / name).write_bytes(b"x")
    for read in (read_nifti, read_itk):
        with pytest.raises(ImageReadError, match="unknown extension") as err:
            read(tmp_path / name)
        assert name in _one_line(err)
    for write in (write_nifti, write_itk):
        with pytest.raises(InputError, match="unknown extension"):
            write(mr_image, tmp_path / f"new_{name}")


def test_missing_file(tmp_path):
    for read, name in ((read_nifti, "no.nii.gz"), (read_itk, "no.mha")):
        with pytest.raises(ImageReadError, match="no such file") as err:
            read(tmp_path / name)
        assert name in _one_line(err)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_truncated_nifti(tmp_path, ext, mr_image):
    path = write_nifti(mr_image, tmp_path / f"img{ext}")
    raw = gzip.decompress(path.read_bytes()) if ext == ".nii.gz" else path.read_bytes()
    cut = raw[: len(raw) - 200]  # header intact, voxel data cut short
    path.write_bytes(gzip.compress(cut) if ext == ".nii.gz" else cut)
    with pytest.raises(ImageReadError) as err:
        read_nifti(path)
    assert str(path) in _one_line(err)
    path.write_bytes(b"\x00" * 100)  # not even a header
    with pytest.raises(ImageReadError):
        read_nifti(path)


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_corrupt_itk_file(tmp_path, ext, mr_image):
    path = write_itk(mr_image, tmp_path / f"img{ext}")
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ImageReadError) as err:
        read_itk(path)
    assert str(path) in _one_line(err)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_nonfinite(tmp_path, ext, mr_image):
    read, write = _io(ext)
    data = mr_image.array.copy()
    data[0, 2, 3, 1] = np.nan
    data[0, 0, 0, 0] = np.inf
    bad = mr_image.with_array(data)
    with pytest.raises(InputError, match="NaN/Inf"):
        write(bad, tmp_path / f"a{ext}")
    assert not list(tmp_path.iterdir())
    path = write(bad, tmp_path / f"a{ext}", allow_nonfinite=True)
    with pytest.raises(InputError, match="NaN/Inf") as err:
        read(path)
    assert str(path) in _one_line(err)
    back = read(path, allow_nonfinite=True)
    assert np.isnan(back.array[0, 2, 3, 1]) and np.isinf(back.array[0, 0, 0, 0])
