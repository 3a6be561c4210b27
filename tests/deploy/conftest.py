"""Tiny models to export: a two-level segmentation U-Net and a 16-channel RED-CNN, each in
a model folder laid out as ``predict --model`` takes it (untrained: export needs no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model

from medimg.engine.config import to_yaml
from medimg.tasks.segment.models import build_network
from medimg.tasks.segment.plan import SegPlan, load_plan, save_plan

DEFAULT_PLAN = Path(__file__).parents[2] / "src/medimg/tasks/segment/default/plan.yaml"


@pytest.fixture(scope="session")
def tiny_segment(tmp_path_factory) -> Path:
    plan: SegPlan = load_plan(DEFAULT_PLAN)  # the shipped CT plan, shrunk
    plan.patch_size, plan.pool_strides = [16, 16, 8], [[2, 2, 2], [2, 2, 1]]
    plan.conv_kernels, plan.filters, plan.deep_supervision_heads = [[3, 3, 3]] * 3, [4, 8, 8], 0
    folder = tmp_path_factory.mktemp("seg") / "tiny_seg"
    folder.mkdir()
    save_plan(plan, folder / "plan.yaml")
    torch.manual_seed(0)
    net = build_network(plan)
    save_model(net, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_ct(tmp_path_factory) -> Path:
    from medimg.tasks.reconstruct.ct.train import CTTrainConfig, build_for

    cfg = CTTrainConfig(model="redcnn", features=16, mean_restore_px=4.0)
    cfg.sim.image_size, cfg.sim.n_views = 48, 48
    folder = tmp_path_factory.mktemp("ct") / "tiny_redcnn"
    folder.mkdir()
    to_yaml(cfg, folder / "config.yaml")
    torch.manual_seed(0)
    net = build_for(cfg)
    save_model(net, str(folder / "model.safetensors"))
    return folder
