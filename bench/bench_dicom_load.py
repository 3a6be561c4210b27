"""DICOM series load: medimg's ``read_dicom`` against SimpleITK's ImageSeriesReader.

Writes a 200-slice 512x512 int16 CT series (RescaleIntercept -1024) into a temporary folder,
then, in this process, alternates the two readers (after one warm-up each) and prints the median
of 5 runs and the ratio. SimpleITK's time includes ``GetGDCMSeriesFileNames`` (GDCM's sorted
file names), the counterpart of our header pass; its ``Execute`` alone is printed too. Peak
memory of our load is measured against the final float32 volume with tracemalloc (numpy reports
its buffers to it) and, in a fresh child process, as the growth of peak RSS.

Usage: ``.venv/bin/python bench/bench_dicom_load.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

N_SLICES, SIZE, ROUNDS = 200, 512, 5


def write_ct_series(folder: Path, n: int = N_SLICES, size: int = SIZE) -> None:
    """An axial int16 CT series, 0.7 x 0.7 x 1.25 mm, files named in shuffled order."""
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:size, :size]
    body = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (0.4 * size) ** 2) * 1064
    names = rng.permutation(n)
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.Modality, ds.PatientID, ds.SeriesDescription = "CT", "BENCH", "bench series"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [-179.2, -179.2, 1.25 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.25
        noise = rng.integers(-20, 20, size=(size, size), dtype=np.int16)
        ds.set_pixel_data((body + noise).astype(np.int16), "MONOCHROME2", 16)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.save_as(folder / f"slice_{names[k]:04d}.dcm", enforce_file_format=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_medimg(folder: Path):
    from medimg.io.dicom.read import read_dicom

    return read_dicom(folder)


def load_sitk(folder: Path, names: list[str] | None = None):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names or sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def timed(fn, *args) -> float:
    gc.collect()
    t0 = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - t0
    del result
    return elapsed


def peak_rss() -> int:
    """Peak resident set size of this process in bytes.

    VmHWM is per address space, so it starts afresh at exec; ru_maxrss (the fallback) would
    carry over the parent's peak into a child started with fork + exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def rss_child(folder: Path) -> None:
    """Run in a fresh process: print peak-RSS growth of one load over the volume size."""
    import medimg.io.dicom.read  # noqa: F401  (imports are not part of the load)

    base = peak_rss()
    img = load_medimg(folder)
    print((peak_rss() - base) / img.array.nbytes)


def main() -> None:
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory(prefix="medimg-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        write_ct_series(folder)
        print(f"wrote {N_SLICES} slices {SIZE}x{SIZE} int16 in {time.perf_counter() - t0:.1f} s")
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))

        img, ref = load_medimg(folder), sitk.GetArrayFromImage(load_sitk(folder))
        assert np.array_equal(img.array[0].T, ref), "the two readers disagree"  # warm-up too
        del img, ref
        ours, theirs, exec_only = [], [], []
        for _ in range(ROUNDS):
            ours.append(timed(load_medimg, folder))
            theirs.append(timed(load_sitk, folder))
            exec_only.append(timed(load_sitk, folder, names))
        t_ours, t_sitk = statistics.median(ours), statistics.median(theirs)
        t_exec = statistics.median(exec_only)

        gc.collect()
        tracemalloc.start()
        img = load_medimg(folder)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        mem_ratio = peak / img.array.nbytes
        rss = subprocess.run([sys.executable, __file__, "--rss-child", str(folder)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        rss_ratio = float(rss.stdout.strip())

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, SimpleITK {sitk.Version_VersionString()}")  # fmt: skip
    runs = ", ".join(f"{t:.3f}" for t in ours)
    print(f"medimg read_dicom           median of {ROUNDS}: {t_ours:.3f} s  (runs: {runs})")
    print(f"SimpleITK names + Execute   median of {ROUNDS}: {t_sitk:.3f} s")
    print(f"SimpleITK Execute only      median of {ROUNDS}: {t_exec:.3f} s")
    print(f"speed ratio SimpleITK / medimg: {t_sitk / t_ours:.2f}x "
          f"(Execute only: {t_exec / t_ours:.2f}x); >= 1 means medimg is at least as fast")  # fmt: skip
    print(f"peak memory / float32 volume ({img.array.nbytes / 2**20:.0f} MiB): "
          f"tracemalloc {mem_ratio:.3f}, peak RSS growth {rss_ratio:.3f} (target <= 1.5)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rss_child(args.rss_child) if args.rss_child else main()
