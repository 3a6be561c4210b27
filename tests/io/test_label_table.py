"""Label tables beside label maps: BIDS-style TSV, the SEG's colours, one-line errors."""

from __future__ import annotations

import pytest

from medimg.errors import InputError, OutputExistsError
from medimg.io.dicom.codes import structure_code
from medimg.io.label_table import label_table_path, read_label_table, write_label_table


@pytest.mark.parametrize(
    ("image", "table"),
    [("a/case_1.nii.gz", "a/case_1.tsv"), ("b.nii", "b.tsv"), ("c.seg.nrrd", "c.seg.tsv"),
     ("d.mha", "d.tsv")],
)  # fmt: skip
def test_table_sits_beside_the_image_with_its_stem(image, table, tmp_path) -> None:
    assert label_table_path(tmp_path / image) == tmp_path / table


def test_round_trip_adds_background_and_uses_the_seg_colours(tmp_path) -> None:
    path = write_label_table(tmp_path / "x.tsv", {2: "spleen", 1: "liver", 3: "my_structure"})
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tname\tcolor"
    assert read_label_table(path) == {0: "background", 1: "liver", 2: "spleen", 3: "my_structure"}
    r, g, b = structure_code("spleen", 2).rgb
    assert lines[3] == f"2\tspleen\t#{r:02x}{g:02x}{b:02x}"


def test_existing_table_is_not_overwritten_and_bad_tables_are_refused(tmp_path) -> None:
    path = write_label_table(tmp_path / "x.tsv", {1: "liver"})
    with pytest.raises(OutputExistsError, match="already exists"):
        write_label_table(path, {1: "kidney"})
    assert read_label_table(path)[1] == "liver"
    bad = tmp_path / "bad.tsv"
    bad.write_text("value\tlabel\n1\tliver\n")
    with pytest.raises(InputError, match="needs 'index' and 'name'"):
        read_label_table(bad)
    bad.write_text("index\tname\none\tliver\n")
    with pytest.raises(InputError, match="cannot read the label table"):
        read_label_table(bad)
