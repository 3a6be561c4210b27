"""The per-task Python API (``medimg.segment``, ``medimg.register``, ``medimg.detect``,
``medimg.diagnose``, ``medimg.recon.mri``, ``medimg.recon.ct``): each module's five-line example
runs as written on a small phantom, results keep the input's geometry, bad devices are one line."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import numpy as np
import pytest

import medimg
from medimg.errors import InputError
from medimg.io.api import load, save
from medimg.io.image import Image

MODULES = ["segment", "register", "detect", "diagnose", "recon.mri", "recon.ct"]


def _module(name: str):
    return importlib.import_module(f"medimg.{name}")


def _example(module) -> str:
    """The code block after ``::`` in the module docstring."""
    block = module.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return textwrap.dedent(block)


def _same_grid(out: Image, ref: Image) -> None:
    assert out.spatial_shape == ref.spatial_shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)


# small phantoms, one per task (each call below takes well under a second on one CPU thread)
def _ct_abdomen() -> Image:
    from medimg.phantoms.abdomen import abdomen_ct_case

    return abdomen_ct_case(
        0, fov_mm=145.0, length_mm=70.0, centre_z_mm=-90.0, phase="portal"
    ).image  # 36 x 36 x 14 at 4 x 4 x 5 mm


def _mr_pair() -> tuple[Image, Image]:
    from medimg.phantoms.registration import make_pair

    pair = make_pair("mr", 3, shape=(16, 16, 16), spacing=4.0)
    return pair.fixed, pair.moving


def _ct_chest() -> Image:
    from medimg.phantoms.ct import body_phantom

    return body_phantom((24, 64, 64), (2.5, 2.0, 2.0), n_nodules=1, seed=0).to_images()[0]


def _xray() -> Image:
    from medimg.phantoms.diagnosis import make_case

    return make_case("xray", 0, True, size=64).to_images()["DX"]


def _mr_volume() -> Image:
    from medimg.phantoms.segmentation import mr_tissue_case

    return mr_tissue_case(0, shape=(32, 32, 4)).image


def _ct_slice() -> Image:
    from medimg.phantoms.ct import body_phantom

    return body_phantom((64, 64), (1.5, 1.5), seed=1).to_images()[0]


def test_every_task_module_imports_with_load_model_predict_and_its_class():
    from medimg.tasks.detect.predict import Detector
    from medimg.tasks.diagnose.predict import Diagnoser
    from medimg.tasks.reconstruct.mri.infer import Reconstructor
    from medimg.tasks.register.predict import Registrator
    from medimg.tasks.segment.predict import Segmenter

    classes = {"segment": Segmenter, "register": Registrator, "detect": Detector,
               "diagnose": Diagnoser, "recon.mri": Reconstructor}  # fmt: skip
    for name in MODULES:
        mod = _module(name)
        assert callable(mod.load_model) and callable(mod.predict), name
        assert set(mod.__all__) <= set(dir(mod)), name
        if name in classes:
            assert getattr(mod, classes[name].__name__) is classes[name]
    import medimg.recon

    assert medimg.recon.ct.denoise_slices.__module__ == "medimg.tasks.reconstruct.ct.predict"


def test_the_shipped_default_models_live_inside_the_package():
    root = Path(medimg.__file__).parent
    for name in ("segment", "register", "detect", "diagnose"):
        assert _module(name).DEFAULT_MODEL.resolve().is_relative_to(root)
        assert any(_module(name).DEFAULT_MODEL.glob("*.safetensors"))
    assert (_module("recon.ct").DEFAULT_DIR / "redcnn" / "config.yaml").is_file()


@pytest.mark.parametrize(
    ("name", "inputs"),
    [
        ("segment", lambda: {"ct.nii.gz": _ct_abdomen()}),
        ("register", lambda: dict(zip(("fixed.nii.gz", "moving.nii.gz"), _mr_pair()))),
        ("detect", lambda: {"chest_ct.nii.gz": _ct_chest()}),
        ("diagnose", lambda: {"chest.nii.gz": _xray()}),
        ("recon.mri", lambda: {"brain.nii.gz": _mr_volume()}),
        ("recon.ct", lambda: {"low_dose.nii.gz": _ct_slice()}),
    ],
)
def test_the_docstring_example_runs_as_written(name, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    files = inputs()
    for file, image in files.items():
        save(image, file)
    exec(_example(_module(name)), {})  # the documented example, verbatim
    written = sorted(set(p.name for p in tmp_path.iterdir()) - set(files))
    ref = load(next(iter(files)))
    if name == "detect":  # prints the top findings: centres within the scan's extent
        assert capsys.readouterr().out.startswith("[(")
        return
    assert len(written) == 1, written
    _same_grid(load(written[0]), ref)


def test_segment_labels_keep_the_grid_and_name_the_model():
    ct = _ct_abdomen()
    labels = _module("segment").predict(ct, device="cpu", mirror=False)
    _same_grid(labels, ct)
    assert labels.is_label and set(np.unique(labels.array)) > {0}
    assert labels.meta["segment_names"][0] == "background" and labels.meta["model"]


def test_register_warps_onto_the_fixed_grid_with_a_loaded_model():
    reg = _module("register")
    fixed, moving = _mr_pair()
    model = reg.load_model(device="cpu")
    res = reg.predict(fixed, moving, model=model, moving_labels=moving.with_array(
        (moving.array > moving.array.mean()).astype(np.uint8), is_label=True))  # fmt: skip
    _same_grid(res.warped, fixed)
    _same_grid(res.warped_labels, fixed)
    assert res.field.array.shape == (3, *fixed.spatial_shape)


def test_detect_findings_lie_in_the_scan_and_map_onto_its_grid():
    det = _module("detect")
    ct = _ct_chest()
    findings = det.predict(ct, device="cpu")
    assert findings and findings == sorted(findings, key=lambda f: -f.score)
    corners = np.array([[i, j, k, 1] for i in (0, 63) for j in (0, 63) for k in (0, 23)])
    world = (corners @ ct.affine.T)[:, :3]
    lo, hi = world.min(0) - max(ct.spacing), world.max(0) + max(ct.spacing)  # voxel edges
    for f in findings:
        assert np.all(lo <= f.center_ras) and np.all(f.center_ras <= hi)
    labels = det.label_map(ct, findings, threshold=0.0)
    _same_grid(labels, ct)
    assert labels.array.max() == len(labels.meta["segment_names"]) > 0


def test_diagnose_gives_probabilities_and_a_heat_map_on_the_input_grid():
    xray = _xray()
    res = _module("diagnose").predict([xray], device="cpu")
    assert 0.0 <= res.calibrated["nodule"] <= 1.0 and res.predicted in ("normal", "nodule")
    _same_grid(res.heatmap, xray)
    assert res.ood_score is not None


def test_mri_recon_of_an_image_keeps_its_grid_and_resembles_it():
    mri = _module("recon.mri")
    mr = _mr_volume()
    out = mri.predict(mr, device="cpu")
    _same_grid(out, mr)
    assert out.modality == "MR"
    assert np.corrcoef(out.array.ravel(), mr.array.ravel())[0, 1] > 0.8
    kspace = np.random.default_rng(0).normal(size=(2, 4, 32, 32)).astype(np.complex64)
    zero_filled = mri.load_model(method="zero_filled", device="cpu")
    assert mri.predict(kspace, model=zero_filled).shape == (2, 32, 32)


def test_ct_denoising_keeps_grid_and_hu_and_refuses_non_hu():
    ctmod = _module("recon.ct")
    ct = _ct_slice()
    out = ctmod.predict(ct, device="cpu")
    _same_grid(out, ct)
    assert out.modality == "CT" and abs(float(out.array.mean() - ct.array.mean())) < 50
    assert not np.array_equal(out.array, ct.array)
    with pytest.raises(InputError, match="no value below 0"):
        ctmod.predict(ct.with_array(ct.array + 2000), model=ctmod.load_model(device="cpu"))


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:", "CPU0", "cuda:99"])
def test_a_bad_device_is_a_one_line_input_error(name, device):
    with pytest.raises(InputError) as err:
        _module(name).load_model(device=device)
    assert "\n" not in str(err.value) and "device" in str(err.value)


def test_device_strings_accepted():
    from medimg._facade import check_device

    assert check_device("auto") == "auto" and check_device(" CPU ") == "cpu"


def test_the_readme_task_example_runs_as_written(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    example = next(b for b in blocks if "medimg.segment" in b)
    monkeypatch.chdir(tmp_path)
    save(_ct_abdomen(), "ct.nii.gz")
    exec(example, {})
    _same_grid(load("labels.nii.gz"), load("ct.nii.gz"))


def test_recon_us_despeckle_from_python_smooths_a_speckle_png(tmp_path):
    """``medimg.recon.us.despeckle`` on a PNG of fully developed speckle over uniform tissue:
    the written image varies less than the input (speckle reduced), on the same grid."""
    import nibabel as nib
    from PIL import Image as PILImage

    import medimg.recon.us
    from medimg.tasks.reconstruct.us.despeckle_data import PairParams, speckle_pair

    params = PairParams(fwhm_lateral=3.0, fwhm_axial=2.0, density=1.0, dynamic_range=60.0)
    noisy, _ = speckle_pair(np.random.default_rng(3), (64, 48), params, db_map=np.zeros((64, 48)))
    png = np.round(noisy.T * 255).astype(np.uint8)
    PILImage.fromarray(png).save(tmp_path / "b.png")
    folder, _ = medimg.recon.us.despeckle(tmp_path / "b.png", tmp_path / "out")
    out = nib.load(folder / "despeckled.nii.gz").get_fdata().squeeze()
    assert out.shape == (64, 48)
    inner = (slice(8, -8), slice(8, -8))  # away from the image border
    assert out[inner].std() < 0.7 * png.T.astype(float)[inner].std()
