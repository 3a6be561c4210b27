"""2.5D lesion detector: targets decode back to their boxes, DeepLesion key slices load with
their boxes, and a tiny training finds planted lesions far better than chance."""

import dataclasses

import numpy as np
import pytest
import torch

from medimg.datasets.deeplesion import write_deeplesion
from medimg.errors import InputError
from medimg.io.image import Image
from medimg.metrics.detection import froc, match_iou
from medimg.tasks.detect.lesion2d import (
    DEEPLESION_RATES,
    KeySlice,
    Lesion2DConfig,
    detect_key_slice,
    evaluate_key_slices,
    from_deeplesion,
    load_lesion_model,
    make_targets_2d,
    train_lesion_detector,
)


def _slice(boxes, shape=(64, 48), spacing=2.0, seed=0, channels=3):
    """Soft tissue with noise and a +300 HU rectangle per box (pixels, x = first axis)."""
    rng = np.random.default_rng(seed)
    hu = 40 + 25 * rng.standard_normal((channels, *shape))
    for x1, y1, x2, y2 in boxes:
        hu[:, int(x1) : int(x2), int(y1) : int(y2)] += 300
    return KeySlice(Image(hu.astype(np.float32), np.diag([-spacing, -spacing, 1, 1])),
                    np.asarray(boxes, np.float64).reshape(-1, 4), f"s{seed}")  # fmt: skip


class _Oracle(torch.nn.Module):
    """Returns the ideal maps of known boxes (on the network's grid): heatmap logits."""

    def __init__(self, boxes, shape):
        super().__init__()
        self.t = make_targets_2d(shape, boxes)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        h = np.clip(self.t["heatmap"], 1e-4, 1 - 1e-4)
        maps = np.concatenate([np.log(h / (1 - h)), self.t["size"], self.t["offset"]])
        out = torch.zeros((1, 5, *x.shape[2:]))
        out[0, :, : maps.shape[1], : maps.shape[2]] = torch.from_numpy(maps)
        return out


def test_targets_decode_back_to_their_boxes_on_the_input_grid():
    boxes = np.array([[10.0, 8.0, 22.0, 18.0], [40.0, 30.0, 46.0, 38.0]])
    ks = _slice(boxes, spacing=1.0)  # resampled x0.5 to the model's 2 mm
    cfg = Lesion2DConfig(spacing=2.0, min_score=0.5)
    out, scores = detect_key_slice(_Oracle(boxes / 2, (32, 24)), ks, cfg)
    order = np.argsort(out[:, 0])
    np.testing.assert_allclose(out[order], boxes, atol=1e-4)
    assert (scores > 0.99).all()


def test_wrong_channel_count_is_a_one_line_error():
    ks = _slice([[5, 5, 10, 10]], channels=5)
    with pytest.raises(InputError, match="5 channel"):
        detect_key_slice(_Oracle(np.zeros((0, 4)), (32, 24)), ks, Lesion2DConfig(neighbours=1))


def test_deeplesion_root_gives_key_slices_with_boxes(tmp_path):
    hu = np.full((40, 32, 5), -50.0, np.float32)
    root = write_deeplesion(tmp_path / "dl", {"000003_02_01": (hu, (0.8, 0.8, 5.0))},
                            [{"series": "000003_02_01", "key_slice": 3, "box": (4, 5, 12, 14), "split": 2},
                             {"series": "000003_02_01", "key_slice": 3, "box": (20, 6, 30, 16), "split": 2}])  # fmt: skip
    (ks,) = from_deeplesion(root, "val", neighbours=2)
    assert ks.image.array.shape == (5, 40, 32) and ks.image.spacing == pytest.approx((0.8, 0.8))
    np.testing.assert_array_equal(ks.boxes, [[4, 5, 12, 14], [20, 6, 30, 16]])
    assert from_deeplesion(root, "train") == []


def test_tiny_training_finds_planted_lesions(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)

    def cases(n, seed):
        out = []
        for i in range(n):
            w, h = rng.uniform(6, 14, 2)
            x, y = rng.uniform(2, 64 - 16, 2)
            out.append(_slice([[x, y, x + w, y + h]], shape=(64, 64), seed=seed + i))
        return out

    train, val = cases(24, 0), cases(8, 100)
    cfg = Lesion2DConfig(spacing=2.0, patch=48, channels=(8, 16, 32, 64))
    cfg.train = dataclasses.replace(cfg.train, max_steps=150, val_every=75, checkpoint_every=75,
                                    batch_size=8, warmup_steps=5)  # fmt: skip
    train_lesion_detector(train, val, tmp_path / "run", cfg, progress=False)
    model, loaded = load_lesion_model(tmp_path / "run")
    res = evaluate_key_slices(model, val, loaded)
    # chance: four boxes of lesion size scattered at random per image (IoU >= 0.5 is strict)
    guesses = []
    for v in val:
        xy = rng.uniform(0, 50, (4, 2))
        guesses.append(match_iou(np.c_[xy, xy + rng.uniform(6, 14, (4, 2))], np.ones(4), v.boxes,
                                 iou_threshold=0.5))  # fmt: skip
    chance = froc(guesses, DEEPLESION_RATES)
    assert res.sensitivities[3] >= 0.6 and res.sensitivities[3] > chance.sensitivities[3] + 0.4
