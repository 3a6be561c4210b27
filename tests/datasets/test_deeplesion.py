"""DeepLesion adapter: a tiny root written here in the exact public layout (DL_info.csv header
and number formats, 16-bit PNGs holding HU + 32768), boxes, neighbours and bad input."""

import csv

import imageio.v3 as iio
import numpy as np
import pytest

from medimg.datasets.deeplesion import COLUMNS, open_deeplesion, read_dl_info, write_deeplesion
from medimg.errors import InputError

ROW = {  # the first lesion of the real DL_info.csv, on a 40-column x 32-row slice
    "File_name": "000001_01_01_005.png", "Patient_index": "1", "Study_index": "1",
    "Series_ID": "1", "Key_slice_index": "5",
    "Measurement_coordinates": "23.5, 9.0, 23.0, 19.9, 21.1, 14.6, 26.2, 14.1",
    "Bounding_boxes": "12.0, 6.0, 30.0, 22.0", "Lesion_diameters_Pixel_": "11.9677, 5.10387",
    "Normalized_lesion_location": "0.44666, 0.283794, 0.434454", "Coarse_lesion_type": "4",
    "Possibly_noisy": "0", "Slice_range": "3, 7", "Spacing_mm_px_": "0.488281, 0.488281, 5",
    "Image_size": "32, 40", "DICOM_windows": "-175, 275", "Patient_gender": "F",
    "Patient_age": "62", "Train_Val_Test": "3",
}  # fmt: skip


def _write(root, rows, slices=range(3, 8)):
    folder = root / "Images_png" / "000001_01_01"
    folder.mkdir(parents=True)
    for k in slices:  # slice k holds k * 10 HU, the key slice a 100 HU lesion in its box
        hu = np.full((32, 40), k * 10.0)  # (rows, columns) as PNGs store them
        if k == 5:
            hu[6:22, 12:30] = 100.0
        iio.imwrite(folder / f"{k:03d}.png", (hu + 32768).astype(np.uint16))
    with (root / "DL_info.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return root


def test_reads_lesion_and_key_slice_with_neighbours(tmp_path):
    data = open_deeplesion(_write(tmp_path, [ROW]))
    (x,) = data.split("test")
    assert x.series == "000001_01_01" and x.key_slice == 5 and x.lesion_type == "liver"
    assert x.box_mm == pytest.approx((12 * 0.488281, 6 * 0.488281, 30 * 0.488281, 22 * 0.488281))
    img = data.load(x, neighbours=1)
    assert img.array.shape == (3, 40, 32) and img.spacing == pytest.approx((0.488281,) * 2)
    np.testing.assert_array_equal(img.array[[0, 2], 0, 0], [40.0, 60.0])  # slices 4 and 6, HU
    inside = img.array[1, 12:30, 6:22]  # X = column, Y = row: the CSV box indexes it directly
    assert (inside == 100).all() and img.array[1].sum() == pytest.approx(
        100 * inside.size + 50 * (40 * 32 - inside.size)
    )
    assert data.key_slices() == {("000001_01_01", 5): [x]}


def test_neighbours_beyond_the_released_range_repeat_the_edge(tmp_path):
    row = {**ROW, "File_name": "000001_01_01_003.png", "Key_slice_index": "3"}
    img = open_deeplesion(_write(tmp_path, [row])).load(
        read_dl_info(tmp_path / "DL_info.csv")[0], 2
    )
    np.testing.assert_array_equal(img.array[:, 0, 0], [30, 30, 30, 40, 50])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"Bounding_boxes": "12, 6, 30"}, "expected 4 numbers"),
        ({"Bounding_boxes": "30, 6, 12, 22"}, "empty or negative"),
        ({"Key_slice_index": "9"}, "outside Slice_range 3-7"),
        ({"Train_Val_Test": "4"}, "expected 1 (train), 2 (val) or 3 (test)"),
        ({"File_name": "lesion.png"}, "is not <patient>_<study>_<series>_<slice>.png"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_the_row(tmp_path, change, words):
    _write(tmp_path, [ROW, {**ROW, **change}])
    with pytest.raises(InputError, match="row 3") as err:
        open_deeplesion(tmp_path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_missing_files_and_columns(tmp_path):
    root = _write(tmp_path / "a", [ROW], slices=[5])  # neighbours 4 and 6 were never unpacked
    with pytest.raises(InputError, match="slice PNG not found"):
        open_deeplesion(root).load(open_deeplesion(root).lesions[0], neighbours=1)
    outside = _write(tmp_path / "b", [{**ROW, "Bounding_boxes": "12, 6, 50, 22"}])
    with pytest.raises(InputError, match="reaches outside the 40x32 slice"):
        open_deeplesion(outside).load(open_deeplesion(outside).lesions[0])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "DL_info.csv").write_text("File_name,Bounding_boxes\n")
    with pytest.raises(InputError, match="lacks column"):
        open_deeplesion(tmp_path / "c")
    with pytest.raises(InputError, match=r"DL_info\.csv not found"):
        open_deeplesion(tmp_path / "nowhere")


def test_writer_round_trip(tmp_path):
    hu = np.random.default_rng(0).integers(-1000, 1000, (24, 20, 6)).astype(np.float32)
    root = write_deeplesion(tmp_path / "dl", {"000002_01_03": (hu, (0.7, 0.8, 2.5))},
                            [{"series": "000002_01_03", "key_slice": 2, "box": (3, 4, 10, 9),
                              "split": 1, "type": 5}])  # fmt: skip
    data = open_deeplesion(root)
    (x,) = data.split("train")
    assert x.lesion_type == "lung" and x.spacing == (0.7, 0.8, 2.5)
    np.testing.assert_array_equal(
        data.load(x, neighbours=1).array, np.moveaxis(hu[:, :, 0:3], 2, 0)
    )
