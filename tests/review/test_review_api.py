"""The review server's API through FastAPI's TestClient: the token, listing, slices, saving a
correction (exactly the edited voxels, never over the proposal) and refused paths."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from medimg.cli import main
from medimg.errors import InputError
from medimg.io.api import load
from medimg.review.folder import ReviewFolder, from_display, to_display
from medimg.review.server import TOKEN_HEADER, create_app

TOKEN = "t0ken-for-tests"
AUTH = {TOKEN_HEADER: TOKEN}


@pytest.fixture
def client(review_dir):
    return TestClient(create_app(ReviewFolder(review_dir), TOKEN))


def _canonical(path):
    return load(path).canonical().array[0]


def test_every_request_needs_the_token(client) -> None:
    for url in ("/", "/static/app.js", "/api/cases", "/api/cases/case_a/slice"):
        assert client.get(url).status_code == 403
        assert client.get(url, headers={TOKEN_HEADER: "wrong"}).status_code == 403
    assert client.get(f"/api/cases?token={TOKEN}").status_code == 200
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and f'content="{TOKEN}"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_list_follows_the_queue(client) -> None:
    cases = client.get("/api/cases", headers=AUTH).json()["cases"]
    assert [c["case"] for c in cases] == ["case_b", "case_a"]
    assert cases[1]["has_proposal"] and not cases[0]["has_proposal"]
    info = client.get("/api/cases/case_a", headers=AUTH).json()
    assert info["shape"] == [24, 20, 6] and info["spacing"] == [1.5, 1.0, 3.0]
    assert info["labels"]["1"]["name"] == "liver" and info["labels"]["2"]["color"].startswith("#")
    assert info["has_uncertainty"] and info["queue"]["rank"] == 2


def test_display_orientation_is_radiological() -> None:
    vol = np.arange(4 * 3 * 2).reshape(4, 3, 2)
    axial = to_display(vol, 2, 1)
    assert axial.shape == (3, 4)  # rows: y (anterior at the top), columns: x
    assert axial[0, 0] == vol[3, 2, 1]  # top left: the patient's right, anterior
    assert np.array_equal(from_display(axial), vol[:, :, 1])
    assert to_display(vol, 0, 2)[0, 0] == vol[2, 2, 1]  # sagittal: superior, anterior


def test_slices_come_reoriented_with_their_shape(client, review_dir) -> None:
    canon = _canonical(review_dir / "proposals" / "case_a.nii.gz")
    for axis, index in ((2, 3), (1, 5), (0, 7)):
        r = client.get(f"/api/cases/case_a/slice?layer=labels&axis={axis}&index={index}",
                       headers=AUTH)  # fmt: skip
        rows, cols = map(int, r.headers["x-shape"].split(","))
        got = np.frombuffer(r.content, np.uint8).reshape(rows, cols)
        assert np.array_equal(got, to_display(canon, axis, index))
    r = client.get("/api/cases/case_a/slice?layer=image&axis=2&index=0", headers=AUTH)
    img = np.frombuffer(r.content, "<f4").reshape(20, 24)
    assert np.allclose(
        img, to_display(_canonical(review_dir / "images" / "case_a_0000.nii.gz"), 2, 0)
    )
    r = client.get("/api/cases/case_b/slice?layer=labels&axis=2&index=0", headers=AUTH)
    assert r.status_code == 200 and not any(r.content)  # no proposal: start from nothing
    bad = client.get("/api/cases/case_a/slice?layer=image&axis=2&index=6", headers=AUTH)
    assert bad.status_code == 400 and "outside" in bad.json()["error"]
    assert client.get("/api/cases/case_a/slice?layer=secret", headers=AUTH).status_code == 400


def _save(client, edits, **fields):
    body = {"edits": [{"axis": a, "index": i, "data": base64.b64encode(d.tobytes()).decode()}
                      for a, i, d in edits], **fields}  # fmt: skip
    return client.post("/api/cases/case_a/save", headers=AUTH, json=body)


def test_save_writes_exactly_the_edit_beside_the_proposal(client, review_dir) -> None:
    proposal = review_dir / "proposals" / "case_a.nii.gz"
    digest = hashlib.sha256(proposal.read_bytes()).hexdigest()
    canon = _canonical(proposal).astype(np.uint8)
    disp = to_display(canon, 2, 3).copy()
    disp[0:2, 0:3] = 2  # paint a corner (background before)
    r = _save(client, [(2, 3, disp)], status="accepted", note="corner added", reviewer="dr x")
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["status"] == "accepted" and record["reviewer"] == "dr x"
    assert record["changed_voxels"] == 6 and record["labels"]["spleen"]["added_voxels"] == 6
    assert 0 < record["dice_foreground"] < 1 and record["labels"]["liver"]["dice"] == 1.0
    assert hashlib.sha256(proposal.read_bytes()).hexdigest() == digest  # proposal untouched
    out = load(review_dir / "reviewed" / "case_a.nii.gz", is_label=True)
    before = load(proposal, is_label=True)
    assert np.allclose(out.affine, before.affine)  # the file's own grid and axis order
    changed = np.argwhere(out.array[0] != before.array[0])
    # display rows 0..1 = canonical y 19..18, columns 0..2 = canonical x 23..21; the file is
    # stored LPS (x and y reversed), so these are file indices x 0..2, y 0..1 at z 3
    assert sorted(map(tuple, changed)) == [(x, y, 3) for x in range(3) for y in range(2)]
    assert (review_dir / "reviewed" / "case_a.tsv").is_file()
    saved = json.loads((review_dir / "reviewed" / "case_a.json").read_text())
    assert saved["note"] == "corner added" and saved["proposal"] == "proposals/case_a.nii.gz"
    # the page now starts from the correction; a second save keeps the first in the history
    r = client.get("/api/cases/case_a/slice?layer=labels&axis=2&index=3", headers=AUTH)
    assert np.array_equal(np.frombuffer(r.content, np.uint8).reshape(disp.shape), disp)
    again = _save(client, [], status="rejected").json()
    assert again["history"][0]["status"] == "accepted" and again["changed_voxels"] == 6
    assert client.get("/api/cases", headers=AUTH).json()["cases"][1]["status"] == "rejected"


def test_bad_saves_are_refused(client, review_dir) -> None:
    ok = np.zeros((20, 24), np.uint8)
    assert _save(client, [(2, 3, ok[:5])]).status_code == 400  # wrong shape
    assert _save(client, [(2, 3, ok)], status="maybe").status_code == 400
    body = {"edits": [{"axis": 2, "index": 3, "data": "not base64!"}]}
    assert client.post("/api/cases/case_a/save", headers=AUTH, json=body).status_code == 400
    r = client.post("/api/cases/case_a/save", headers=AUTH, content=b"\x80\x04pickle")
    assert r.status_code == 400
    assert not (review_dir / "reviewed").exists()  # nothing written by a refusal


@pytest.mark.parametrize(
    "url",
    ["/api/cases/..%2F..%2Fetc%2Fpasswd", "/api/cases/../../etc/passwd/slice",
     "/api/cases/%2E%2E/slice", "/static/..%2Ffolder.py", "/static/folder.py",
     "/api/cases/queue.json", "/static/index.html%00"],
)  # fmt: skip
def test_paths_outside_the_folder_are_refused(client, url) -> None:
    r = client.get(url, headers=AUTH)
    assert r.status_code == 404
    assert "root:" not in r.text and "import" not in r.text


def test_a_link_out_of_the_folder_is_refused(review_dir, tmp_path) -> None:
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes((review_dir / "images" / "case_b.nii.gz").read_bytes())
    (review_dir / "images" / "leak.nii.gz").symlink_to(outside)
    with pytest.raises(InputError, match="outside the review folder"):
        ReviewFolder(review_dir)


def test_review_command_refuses_a_folder_without_images(tmp_path, capsys) -> None:
    assert main(["review", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "images/" in err and len(err.strip().splitlines()) == 1


def test_saving_through_a_link_out_of_the_folder_is_refused(client, review_dir, tmp_path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (review_dir / "reviewed").symlink_to(outside)
    r = _save(client, [], status="accepted")
    assert r.status_code == 400 and "outside the review folder" in r.json()["error"]
    assert not any(outside.iterdir())


def test_accepted_reviews_are_the_training_pairs(client, review_dir) -> None:
    folder = ReviewFolder(review_dir)
    assert folder.accepted() == []
    _save(client, [], status="rejected")
    assert ReviewFolder(review_dir).accepted() == []
    _save(client, [], status="accepted")
    [(name, images, labels)] = ReviewFolder(review_dir).accepted()
    assert name == "case_a" and [p.name for p in images] == ["case_a_0000.nii.gz"]
    assert labels == (review_dir / "reviewed" / "case_a.nii.gz").resolve()
