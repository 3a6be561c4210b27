"""Few-shot fine-tuning (``train --init MODEL --few-shot``): the encoder stays put while frozen,
then moves at exactly 0.1x the rate (the same weights as an optimizer with an encoder parameter
group), and a one-case fine-tune of a trained model runs the schedule end to end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_segment_semi import ball_set, tiny_plan

from medimg.engine import StepContext, load_weights, read_metrics
from medimg.errors import InputError
from medimg.tasks.segment import few_shot
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.predict import Segmenter
from medimg.tasks.segment.train import train_segmentation


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    return ball_set(tmp_path_factory.mktemp("few") / "balls", n_labelled=2, n_unlabelled=0)


def _loss(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = net(x)
    return (out[:, 0] if out.ndim == x.ndim + 1 else out).square().mean()


def test_encoder_frozen_then_at_a_tenth_of_the_rate(balls):
    plan = tiny_plan(balls)
    torch.manual_seed(0)
    net = build_network(plan).train()
    ref = copy.deepcopy(net)  # the same schedule with real parameter groups
    enc = {n for n, _ in net.named_parameters() if few_shot.is_encoder_param(n)}
    assert enc and any(n.startswith("downsamples.") for n in enc)
    assert not any(few_shot.is_encoder_param(n) for n in ("output_block.conv.weight",
                                                          "upsamples.0.conv.weight"))  # fmt: skip
    lr, steps = 1e-2, 6
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    groups = [{"params": [p for n, p in ref.named_parameters() if n in enc], "lr": 0.0},
              {"params": [p for n, p in ref.named_parameters() if n not in enc], "lr": lr}]  # fmt: skip
    ref_opt = torch.optim.AdamW(groups, lr=lr)
    schedule = few_shot.EncoderSchedule(net, steps)  # 20 %: the first step is frozen
    assert schedule.freeze_steps == 1 and schedule.factor(0) == 0.0 and schedule.factor(1) == 0.1
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    step = schedule.wrap(lambda model, batch: _loss(model, batch))
    with schedule:
        for i in range(steps):
            ctx = StepContext(i, 0, torch.Generator(), torch.device("cpu"), 0, 1)
            opt.zero_grad()
            step(net, x, ctx).backward()
            opt.step()
            groups_lr = 0.0 if i < 1 else 0.1 * lr
            ref_opt.param_groups[0]["lr"] = groups_lr
            ref_opt.zero_grad()
            _loss(ref, x).backward()
            if i < 1:  # frozen: no gradient reaches the encoder's moments
                for p in ref_opt.param_groups[0]["params"]:
                    p.grad.zero_()
            ref_opt.step()
            now = dict(net.named_parameters())
            if i == 0:
                assert all(torch.equal(now[n], start[n]) for n in enc)
                assert not all(torch.equal(now[n], start[n]) for n in now if n not in enc)
    moved = dict(net.named_parameters())
    assert not all(torch.equal(moved[n], start[n]) for n in enc)  # trains after the freeze
    for (n, a), b in zip(net.named_parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6), n
    other = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)  # not ours: untouched
    other.param_groups[0]["params"][0].grad = torch.ones(1)
    with schedule:
        other.step()
    assert float(other.param_groups[0]["params"][0].detach()) == 0.0


def test_schedule_settings_and_refusal(balls, tmp_path):
    plan = tiny_plan(balls, max_steps=1000)
    fs = few_shot.few_shot_plan(plan, None)
    assert fs.train.lr == pytest.approx(0.25 * plan.train.lr) and fs.train.max_steps == 250
    assert fs.augment and plan.train.lr == 1e-2  # the caller's plan is left as it was
    assert few_shot.few_shot_plan(plan, 40).train.max_steps == 1000  # a given count is kept
    with pytest.raises(InputError, match="add --init"):
        train_segmentation(balls, tmp_path / "o", few_shot=True)
    assert not (tmp_path / "o").exists()


def test_one_case_fine_tune_from_a_trained_model(balls, tmp_path):
    train_segmentation(balls, tmp_path / "base", fold=-1, plan=tiny_plan(balls, max_steps=20),
                       progress=False, device="cpu", samples_per_epoch=8)  # fmt: skip
    res = train_segmentation(balls, tmp_path / "few", fold=-1, max_steps=10, progress=False,
                             device="cpu", samples_per_epoch=8, init=tmp_path / "base",
                             few_shot=True)  # fmt: skip
    assert res.last_step == 10
    config = (tmp_path / "few" / "config.yaml").read_text()
    assert "few_shot: true" in config
    lrs = [
        r["lr"] for r in read_metrics(tmp_path / "few" / "metrics.jsonl") if r["kind"] == "train"
    ]
    assert lrs and max(lrs) <= 0.25 * 1e-2 + 1e-12  # the base rate is a quarter of the plan's
    base = build_network(tiny_plan(balls))
    load_weights(base, tmp_path / "base")
    tuned = Segmenter(tmp_path / "few", device="cpu").models[0]
    after = dict(tuned.named_parameters())
    enc = [n for n, _ in base.named_parameters() if few_shot.is_encoder_param(n)]
    assert any(not torch.equal(p.cpu(), after[n].cpu()) for n, p in base.named_parameters()
               if n in enc)  # fmt: skip
    assert res.best_metric is not None and np.isfinite(res.best_metric)
