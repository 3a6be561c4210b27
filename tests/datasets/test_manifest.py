"""CSV manifests: modalities, declared classes, missing files and patient leakage."""

from __future__ import annotations

import pytest

from medimg.datasets.manifest import patient_split, read_manifest
from medimg.errors import ImageReadError, InputError


def _files(tmp_path, names):
    for n in names:
        (tmp_path / n).write_bytes(b"x")


def _csv(tmp_path, text):
    p = tmp_path / "cases.csv"
    p.write_text(text.strip() + "\n")
    return p


def test_two_modalities_classes_and_splits(tmp_path):
    _files(tmp_path, ["a1.nii", "b1.nii", "a2.nii", "b2.nii", "a3.nii"])
    p = _csv(
        tmp_path,
        """
path,path2,label,patient_id,split
a1.nii,b1.nii,malignant,p1,train
a2.nii,b2.nii,benign,p2,val
a3.nii,,benign,p3,test
""",
    )
    with pytest.raises(InputError, match="line 4: column path2 is empty"):
        read_manifest(p)
    m = read_manifest(p, classes=["benign", "malignant"], num_modalities=2,
                      allow_missing_modality=True)  # fmt: skip
    assert m.num_modalities == 2 and [r.labels for r in m.rows] == [(1,), (0,), (0,)]
    assert m.rows[2].paths[1] is None and [r.case_id for r in m.split("val")] == ["a2"]


def test_bad_rows_name_the_line_and_fix(tmp_path):
    _files(tmp_path, ["a1.nii", "a2.nii"])
    p = _csv(tmp_path, "path,label\na1.nii,0\nmissing.nii,1\n")
    with pytest.raises(ImageReadError, match=r"line 3: file missing.nii does not exist"):
        read_manifest(p)
    p = _csv(tmp_path, "path,label\na1.nii,benign\na2.nii,unknown\n")
    with pytest.raises(InputError, match="label 'unknown' is not one of the declared classes"):
        read_manifest(p, classes=["benign", "malignant"])
    p = _csv(tmp_path, "path,label,patient_id,split\na1.nii,0,p1,train\na2.nii,1,p1,test\n")
    with pytest.raises(InputError, match=r"patient 'p1' is in split train .* and test"):
        read_manifest(p)
    p = _csv(tmp_path, "path,label\na1.nii,0\na2.nii,1\n")
    with pytest.raises(InputError, match=r"1 image column.* model takes 2 modalities"):
        read_manifest(p, num_modalities=2)


def test_patient_split_keeps_patients_together(tmp_path):
    names = [f"c{i}.nii" for i in range(20)]
    _files(tmp_path, names)
    body = "\n".join(f"{n},{i % 2},pat{i // 2}" for i, n in enumerate(names))
    m = read_manifest(_csv(tmp_path, "path,label,patient_id\n" + body))
    train, val = patient_split(m.rows, 0.2)
    assert len(train) + len(val) == 20 and 2 <= len(val) <= 6
    assert not {r.patient_id for r in train} & {r.patient_id for r in val}


def test_same_names_in_two_folders_get_distinct_ids_and_patients(tmp_path):
    for sub in ("A", "B"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "p01.nii.gz").write_bytes(b"")
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\nA/p01.nii.gz,yes,train\nB/p01.nii.gz,no,val\n")
    rows = read_manifest(m).rows
    assert [r.case_id for r in rows] == ["A__p01", "B__p01"]
    assert [r.patient_id for r in rows] == ["A__p01", "B__p01"]  # not one patient in two splits


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"path,label\nx.nii.gz,caf\xe9\n", "not UTF-8"),
        (b"path,label\n", "no rows"),
        (b"", "empty"),
    ],
)
def test_unreadable_and_empty_manifests_are_one_line_errors(tmp_path, raw, message):
    from medimg.errors import InputError

    (tmp_path / "m.csv").write_bytes(raw)
    with pytest.raises(InputError, match=message):
        read_manifest(tmp_path / "m.csv", check_files=False)
