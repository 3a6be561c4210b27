"""The brain MRI model's recipe on tiny shapes: synthesised samples of random contrast from a
head label map, a tiny model trained on them that beats the majority class, its MR input
contract, and scoring against a reference without deep grey matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brain_heads import toy_head
from monai.losses import DiceCELoss

from medimg.errors import InputError
from medimg.io.image import Image
from medimg.tasks.segment.brain import (
    BRAIN_MODEL,
    brain_dataset,
    brain_plan,
    resolve_model,
    train_brain_preset,
)
from medimg.tasks.segment.brain_eval import brain_dice
from medimg.tasks.segment.contract import check_contract
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.train import deep_supervision_loss

_head = toy_head


def _tiny_plan(**kw):
    return brain_plan(configuration="3d", patch=16, base_features=4, levels=3, val_every=1000,
                      **kw)  # fmt: skip


def test_samples_have_the_plan_shape_brain_classes_and_random_contrast():
    plan = _tiny_plan()
    data = brain_dataset([_head()], plan, samples_per_epoch=8)
    order = set()
    for seed in range(8):
        torch.manual_seed(seed)
        s = data[0]
        assert s["image"].shape == (1, 16, 16, 16) and s["image"].dtype == torch.float32
        assert s["label"].shape == (1, 16, 16, 16)
        assert set(s["label"].unique().tolist()) <= {0, 1, 2, 3, 4}  # head is background
        img, lab = s["image"][0], s["label"][0]
        if (lab == 1).any() and (lab == 3).any():
            order.add(bool(img[lab == 1].mean() > img[lab == 3].mean()))
    assert order == {True, False}  # CSF brighter than WM in some samples, darker in others
    torch.manual_seed(3)
    a = data[0]
    torch.manual_seed(3)
    assert torch.equal(a["image"], data[0]["image"])  # a sample is a function of its seed


def test_a_tiny_model_trained_on_synthesised_heads_beats_the_majority_class():
    plan = _tiny_plan()
    plan.deep_supervision_heads = 0
    data = brain_dataset([_head((16, 16, 16))], plan)
    samples = []
    for seed in range(16):  # 12 to train on, 4 held out (other contrasts and deformations)
        torch.manual_seed(seed)
        samples.append(data[0])
    x = torch.stack([s["image"] for s in samples])
    y = torch.stack([s["label"] for s in samples])
    torch.manual_seed(0)
    net = build_network(plan)

    def mean_dice() -> float:
        net.eval()
        with torch.no_grad():
            pred = net(x[12:]).argmax(1).numpy()
        net.train()
        return float(np.mean([np.mean(list(brain_dice(p, t).values()))
                              for p, t in zip(pred, y[12:, 0].numpy())]))  # fmt: skip

    untrained = mean_dice()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(30):
        idx = torch.randint(12, (2,))
        loss = deep_supervision_loss(loss_fn, net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = mean_dice()
    majority = np.mean(list(brain_dice(np.zeros((16,) * 3), y[12, 0].numpy()).values()))
    assert trained > majority + 0.15 and trained > untrained + 0.1, (trained, untrained)


def test_the_preset_writes_a_model_folder_and_refuses_to_overwrite_it(tmp_path):
    from medimg.errors import OutputExistsError

    plan = _tiny_plan(max_steps=2)
    plan.train.device = "cpu"
    res = train_brain_preset(tmp_path / "run", label_maps=[_head()], plan=plan, progress=False,
                             validate=False)  # fmt: skip
    model = tmp_path / "run" / "model"
    assert res.last_step == 2 and (model / "plan.yaml").is_file() and (model / "last").is_dir()
    assert "cortical_gm" in (model / "plan.yaml").read_text()
    with pytest.raises(OutputExistsError, match="--resume"):
        train_brain_preset(tmp_path / "run", label_maps=[_head()], plan=plan, validate=False)


def _ct_abdomen(shape=(32, 32, 16)) -> np.ndarray:
    x, y, _ = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2)
    hu = np.where(r < 0.7, 40.0, -1000.0) + np.where(r < 0.2, 700.0, 0.0)
    return (hu + np.random.default_rng(1).normal(0, 10, shape)).astype(np.float32)


def test_the_brain_model_refuses_a_ct_and_takes_a_t1_like_head():
    plan = brain_plan()
    ct = Image(_ct_abdomen()[None], np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(InputError, match="CT-like"):
        check_contract(ct, plan, "ct.nii.gz")
    note = check_contract(ct, plan, "ct.nii.gz", force=True)
    assert note and "--force" in note
    t1 = Image((_head().numpy() * 30.0)[None].astype(np.float32), np.eye(4))
    assert check_contract(t1, plan, "t1.nii.gz") is None


def test_model_name_brain_is_the_shipped_folder_and_deep_grey_scores_as_grey(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model("brain") == BRAIN_MODEL
    assert resolve_model("runs/x") == "runs/x" and resolve_model(None) is None
    (tmp_path / "brain").mkdir()  # a user's own folder of that name wins
    assert resolve_model("brain") == "brain"
    ref = np.array([0, 1, 2, 2, 3, 3])
    pred = np.array([0, 1, 2, 4, 3, 3])
    assert brain_dice(pred, ref) == {"csf": 1.0, "gm": 1.0, "wm": 1.0}
