"""Network factory: MONAI's DynUNet (deep supervision) or SegResNet, built from the plan."""

from __future__ import annotations

import math

from torch import nn

from medimg.errors import InputError
from medimg.tasks.segment.plan import SegPlan

__all__ = ["build_network", "count_parameters"]


def build_network(plan: SegPlan) -> nn.Module:
    """The plan's network. DynUNet returns ``(B, 1 + heads, K, ...)`` in training mode when
    ``deep_supervision_heads > 0`` (heads upsampled to full size), ``(B, K, ...)`` in eval."""
    dims, c_in, k = plan.spatial_dims, len(plan.channel_names), plan.num_classes
    if len(plan.patch_size) != dims:
        raise InputError(f"plan patch_size {plan.patch_size} is not {dims}D")
    if plan.network == "dynunet":
        from monai.networks.nets import DynUNet

        levels = len(plan.pool_strides) + 1
        if len(plan.conv_kernels) != levels or len(plan.filters) != levels:
            raise InputError(
                f"plan: conv_kernels ({len(plan.conv_kernels)}) and filters ({len(plan.filters)}) "
                f"need one entry per level ({levels} = len(pool_strides) + 1)"
            )
        heads = plan.deep_supervision_heads
        if heads > levels - 2:
            raise InputError(f"plan: deep_supervision_heads must be <= {levels - 2}, got {heads}")
        return DynUNet(
            dims, c_in, k,
            kernel_size=plan.conv_kernels,
            strides=[[1] * dims, *plan.pool_strides],
            upsample_kernel_size=plan.pool_strides,
            filters=plan.filters,
            norm_name=("INSTANCE", {"affine": True}),
            act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
            deep_supervision=heads > 0,
            deep_supr_num=max(1, heads),
        )  # fmt: skip
    if plan.network == "segresnet":
        from monai.networks.nets import SegResNet

        blocks = (1, 2, 2, 4)[: min(4, len(plan.pool_strides) + 1)]
        groups = math.gcd(8, plan.filters[0])  # GroupNorm needs groups dividing the width
        return SegResNet(
            dims,
            init_filters=plan.filters[0],
            in_channels=c_in,
            out_channels=k,
            blocks_down=blocks,
            norm=("GROUP", {"num_groups": groups}),
        )
    raise InputError(f"plan.network must be dynunet or segresnet, got {plan.network!r}")


#: parameter-name prefixes of the class-scoring layers (DynUNet heads, SegResNet's last conv):
#: a fine-tune to another number of classes starts these fresh
OUTPUT_LAYERS = ("output_block.", "deep_supervision_heads.", "conv_final.")


def is_output_layer(key: str) -> bool:
    return key.startswith(OUTPUT_LAYERS)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
