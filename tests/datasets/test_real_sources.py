"""Real-data fetcher: unpacks a package into the cache once, whole, and says plainly when the
registry cannot be reached (no network in these tests: the download is replaced)."""

from __future__ import annotations

import zipfile

import pytest

from medimg.datasets import real_sources
from medimg.errors import MedimgError


def test_fetch_unpacks_once_into_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDIMG_DATA_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_download(src, into):
        calls.append(src.package)
        wheel = into / "pydicom_data-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("data_store/data/CT_small.dcm", b"x" * 10)
        return wheel

    monkeypatch.setattr(real_sources, "_download", fake_download)
    path = real_sources.real_file("pydicom-data", "CT_small.dcm")
    assert path.read_bytes() == b"x" * 10
    assert real_sources.fetch("pydicom-data") == path.parent and calls == ["pydicom-data"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["pydicom-data"]


def test_failed_download_leaves_no_partial_tree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDIMG_DATA_CACHE", str(tmp_path))

    def offline(src, into):
        raise MedimgError("could not download wheel package dipy==1.12.1 (network unreachable)")

    monkeypatch.setattr(real_sources, "_download", offline)
    with pytest.raises(MedimgError, match="could not download"):
        real_sources.fetch("dipy")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MedimgError, match="unknown real-data source"):
        real_sources.fetch("brainweb")


def test_copyleft_sources_are_validation_only() -> None:
    for src in real_sources.SOURCES.values():
        assert src.train_ok == ("GPL" not in src.licence)
