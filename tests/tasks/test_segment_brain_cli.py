"""``medimg segment predict --model brain``: the shipped brain model refuses a CT abdomen and a
chest radiograph in one line, segments a head-like MR volume, and names itself in the output."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np

from medimg.cli import main
from medimg.io.api import save
from medimg.io.image import Image


def _one_error(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    err = [x for x in lines if x.strip() and not re.search(r"\| *\d+/\d+ \[", x)]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_ct_abdomen_and_a_chest_radiograph_are_refused(tmp_path, capsys):
    x, y, _ = np.meshgrid(*[np.linspace(-1, 1, n) for n in (32, 32, 12)], indexing="ij")
    hu = np.where(np.hypot(x, y) < 0.7, 40.0, -1000.0) + np.where(np.hypot(x, y) < 0.2, 700, 0)
    ct = save(Image(hu[None].astype(np.float32), np.diag([4.0, 4.0, 5.0, 1.0])),
              tmp_path / "abdomen.nii.gz")  # fmt: skip
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", "predict", str(ct), str(out), "--model", "brain"]) == 2
    line = _one_error(capsys)
    assert "CT-like" in line and "3D MR images" in line and "--force" in line
    assert not out.exists()
    xray = np.random.default_rng(0).integers(0, 4000, (64, 60)).astype(np.float32)
    film = save(Image(xray[None], np.diag([0.2, 0.2, 1.0, 1.0]), modality="DX"), tmp_path / "cxr")
    assert main(["segment", "predict", str(film), str(tmp_path / "o"), "--model", "brain"]) == 2
    assert "DX is not MR" in _one_error(capsys)


def test_a_head_like_volume_gets_brain_labels_named_by_the_model(tmp_path, capsys):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 48, 40)], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    t1 = np.select([r < 0.45, r < 0.65, r < 0.72, r < 0.9], [110.0, 75.0, 40.0, 140.0], 0.0)
    t1 += np.random.default_rng(0).normal(0, 3, t1.shape)
    scan = save(Image(np.clip(t1, 0, None)[None].astype(np.float32), np.diag([4.0] * 3 + [1])),
                tmp_path / "head.nii.gz")  # fmt: skip
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", "predict", str(scan), str(out), "--model", "brain",
                 "--no-mirror"]) == 0  # fmt: skip
    labels = np.asarray(nib.load(out).dataobj)
    assert labels.shape == (40, 48, 40) and set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    descrip = nib.load(out).header["descrip"].item().decode()
    assert re.fullmatch(
        r"medimg \S+ segment brain \(SynthBrain-Colin27 MR\) sha1:[0-9a-f]{8}", descrip
    )
