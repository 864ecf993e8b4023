"""The fastest numerics this machine trains with: the default ``trainer.precision`` of the CLIs.

bfloat16 autocast ("bf16-mixed") trained UNet11 2.1x faster than float32 on a CPU with AVX512-BF16,
and 2.6x with channels_last (``benchmarks/results/speed_options.md``); without native bfloat16
instructions it is emulated and slower, so float32 stays the default there.
"""

from __future__ import annotations

import torch


def native_bf16() -> bool:
    """Whether the device Lightning's ``accelerator="auto"`` picks computes bfloat16 natively."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    # private, but the only probes torch offers for these instruction sets
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def fast_precision() -> str:
    """``"bf16-mixed"`` where bfloat16 is native, else ``"32-true"``."""
    return "bf16-mixed" if native_bf16() else "32-true"
