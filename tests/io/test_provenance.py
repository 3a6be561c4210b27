"""Outputs say which model made them: the tag reaches NIfTI, NRRD and DICOM headers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from torch import nn

from medimg.engine.provenance import model_tag, weights_digest
from medimg.io.api import save
from medimg.io.image import Image


def test_tag_changes_with_the_weights_and_fits_a_nifti_descrip() -> None:
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    tag = model_tag("recon-ct", "a-very-long-model-folder-name" * 3, [a], "trained on phantoms")
    assert len(tag) <= 79 and tag.endswith(f"sha1:{weights_digest([a])}")
    assert weights_digest([a]) != weights_digest([b])


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nrrd", "dicom_out"])
def test_description_in_meta_reaches_the_file_header(tmp_path, name) -> None:
    img = Image(np.zeros((1, 8, 8, 3), np.float32), np.eye(4), modality="CT",
                meta={"description": "medimg 0.1 recon-ct redcnn sha1:0123abcd"})  # fmt: skip
    out = save(img, tmp_path / name)
    if name.endswith(".nii.gz"):
        text = nib.load(out).header["descrip"].tobytes().rstrip(b"\0").decode()
    elif name.endswith(".nrrd"):
        text = out.read_bytes().split(b"\n\n")[0].decode("latin-1")
    else:
        text = pydicom.dcmread(sorted(out.glob("*.dcm"))[0]).SeriesDescription
    assert "recon-ct redcnn sha1:0123abcd" in text
