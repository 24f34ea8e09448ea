"""Benchmarks of RoPE application (meant for the entry point ``core-kernels.rope``).

The named baseline is the HF-eager formula ``q·cos + rotate_half(q)·sin`` with cos/sin duplicated
to (T, D), written out here in plain torch (the way Llama's modeling code computes it, in the
input dtype). Rows, each timed against that baseline in the same run:

- on CUDA (bfloat16, (B, H, T, D) = (4, 32, 2048, 128); full mode also (1, 32, 8192, 128)): the
  Triton kernel forward and forward+backward, half layout, and the torch reference forward;
- on the CPU the Triton interpreter would only time the interpreter, so there are no Triton rows:
  the torch reference (float32, (2, 8, 512, 64)) vs the baseline. Quick mode takes seconds.

GB/s counts one read and one write of x (the cos/sin tables are small and cached).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..devices import resolve_device
from ..testing import BenchResult, bench
from .ops import apply_rope
from .reference import rope_angles

__all__ = ["run"]


def _hf_eager(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos2 + rotated * sin2


def _rows(shape, dtype, device, impls, rep) -> list[BenchResult]:
    b, h, t, d = shape
    x = torch.randn(shape, device=device, dtype=dtype)
    cos, sin = rope_angles(torch.arange(t, device=device), d)  # (T, D/2) float32
    cos2 = torch.cat([cos, cos], -1).to(dtype)  # (T, D), HF's table
    sin2 = torch.cat([sin, sin], -1).to(dtype)
    dy = torch.randn_like(x)
    xg = x.clone().requires_grad_(True)
    nbytes = 2.0 * x.numel() * x.element_size()
    meta = {"B": b, "H": h, "T": t, "D": d, "dtype": str(dtype).removeprefix("torch.")}

    def fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], tuple[torch.Tensor]]:
        return lambda: torch.autograd.grad(fn(xg), xg, dy)

    out = []
    for impl in impls:
        out.append(
            bench(
                lambda impl=impl: apply_rope(x, cos, sin, "half", impl=impl),
                lambda: _hf_eager(x, cos2, sin2),
                name=f"apply_rope {impl} fwd {b}x{h}x{t}x{d}",
                baseline_name="HF eager rotate_half",
                bytes_moved=nbytes,
                rep=rep,
                device=device.type,
                meta={**meta, "impl": impl},
            )
        )
    if "triton" in impls:
        out.append(
            bench(
                fwd_bwd(lambda a: apply_rope(a, cos, sin, "half", impl="triton")),
                fwd_bwd(lambda a: _hf_eager(a, cos2, sin2)),
                name=f"apply_rope triton fwd+bwd {b}x{h}x{t}x{d}",
                baseline_name="HF eager rotate_half fwd+bwd",
                bytes_moved=2 * nbytes,
                rep=rep,
                device=device.type,
                meta={**meta, "impl": "triton"},
            )
        )
    return out


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Run the RoPE benchmarks on ``device`` (``"auto"``: CUDA when available).

    Args:
        quick: fewer shapes and repetitions.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        One :class:`BenchResult` per (operation, shape).
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        shapes = [(4, 32, 2048, 128)] + ([] if quick else [(1, 32, 8192, 128)])
        return [
            r
            for s in shapes
            for r in _rows(s, torch.bfloat16, dev, ("triton", "reference"), 20 if quick else 100)
        ]
    return _rows((2, 8, 512, 64), torch.float32, dev, ("reference",), 10 if quick else 30)
