"""Is every value of a tensor finite? Asked of weights as they load and of latents every step.

NaN or infinity anywhere ends as a black clip, so these checks sit on hot paths; one float32
sum is a single pass with no temporary, and NaN or infinity always makes it non-finite. Only
when the sum is non-finite (NaN/inf, or a sum of finite values that overflowed) is the exact
element-wise check made.
"""
from __future__ import annotations

import torch


def all_finite(tensor: torch.Tensor) -> bool:
    if not tensor.dtype.is_floating_point:
        return True
    if tensor.element_size() == 1:  # fp8: few kernels take it as it is
        tensor = tensor.float()
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32))) or bool(torch.isfinite(tensor).all())


def non_finite_count(tensor: torch.Tensor) -> int:
    if not tensor.dtype.is_floating_point:
        return 0
    return int((~torch.isfinite(tensor.float() if tensor.element_size() == 1 else tensor)).sum())
