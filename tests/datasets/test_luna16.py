"""LUNA16 adapter: tiny synthetic files in the exact layout, LPS <-> RAS, and the bad-input errors."""

import numpy as np
import pytest

from medimg.datasets.luna16 import (
    lps_to_ras,
    open_luna16,
    read_annotations,
    write_annotations,
    write_luna16,
)
from medimg.errors import InputError

SMALL = {"shape": (64, 64, 20), "spacing": (5.5, 5.5, 7.0), "n_nodules": (2, 2)}


@pytest.fixture(scope="module")
def luna(tmp_path_factory):
    return write_luna16(tmp_path_factory.mktemp("luna") / "LUNA", 2, progress=False, **SMALL)


def test_layout_and_world_positions(luna):
    names = sorted(p.relative_to(luna).as_posix() for p in luna.rglob("*") if p.is_file())
    assert "annotations.csv" in names and "annotations_excluded.csv" in names
    assert "candidates.csv" in names and "seriesuids.csv" in names
    assert sum(n.endswith(".raw") for n in names) == 2  # uncompressed, as LUNA16 ships
    assert (luna / "annotations.csv").read_text().splitlines()[0] == (
        "seriesuid,coordX,coordY,coordZ,diameter_mm"
    )
    ds = open_luna16(luna)
    assert len(ds.uids()) == 2 and set(ds.subsets.values()) == {"subset0", "subset1"}
    uid = ds.uids()[0]
    image, nod, _ = ds.load(uid)
    assert "ElementType = MET_SHORT" in ds.series[uid].read_text()  # int16 HU
    raw = read_annotations(luna / "annotations.csv")[uid]
    np.testing.assert_allclose(nod[:, :3], lps_to_ras(raw[:, :3]))  # LPS file -> RAS inside
    v = np.round(image.world_to_voxel(nod[:, :3])).astype(int)
    assert np.all((v >= 0) & (v < image.spatial_shape))


def test_unknown_series_and_outside_volume(luna, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(luna, bad)
    rows = [r.split(",") for r in (bad / "annotations.csv").read_text().splitlines()[1:]]
    write_annotations(bad / "annotations.csv", [*rows, ["1.2.3.unknown", 0, 0, 0, 5]],
                      overwrite=True)  # fmt: skip
    with pytest.raises(InputError, match=r"without a volume here.*1\.2\.3\.unknown"):
        open_luna16(bad)
    uid = rows[0][0]
    write_annotations(bad / "annotations.csv", [[uid, 5000, 0, 0, 5]], overwrite=True)
    with pytest.raises(InputError, match="lies outside series"):
        open_luna16(bad).load(uid)


def test_empty_and_malformed_annotations(tmp_path):
    p = tmp_path / "annotations.csv"
    p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    with pytest.raises(InputError, match="no annotations"):
        read_annotations(p)
    assert read_annotations(p, allow_empty=True) == {}
    p.write_text("seriesuid,x,y,z,d\n1,2,3,4,5\n")
    with pytest.raises(InputError, match="lacks column"):
        read_annotations(p)
    p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1,2,abc,4,5\n")
    with pytest.raises(InputError, match="line 2"):
        read_annotations(p)
