"""Rotary position embeddings (RoPE, Su et al. 2021): 1-D in both layouts, Pixtral's 2-D, GQA helpers.

Pair m of a head vector (size D) at position p is rotated by p·θ_m, θ_m = base^(−2m/D):

    (x₁, x₂) ↦ (x₁ cos φ − x₂ sin φ,  x₂ cos φ + x₁ sin φ)

- :func:`rope_angles`: cos/sin (..., D/2) of the 1-D angles for any (even fractional) positions.
- :func:`rope_2d_angles`: Pixtral's 2-D angles for patch (i, j), ordered [height | width]: pair
  b < D/4 uses i·θ_{2b}, pair b ≥ D/4 uses j·θ_{2(b−D/4)+1} (the mistral/HF code's order).
- :func:`apply_rope`: rotate x (..., D) in the ``"interleaved"`` (pairs (2m, 2m+1), GPT-J/Meta)
  or ``"half"`` (pairs (m, m+D/2), HF ``rotate_half``) layout.
- :func:`permute_rope_rows`: permute Wq/Wk rows so one layout computes what the other did.
- :func:`kv_head_index`, :func:`repeat_kv`: GQA head mapping, h -> h // n_rep (HF semantics).

Everything here is plain PyTorch; importing it imports no triton.
"""

from .ops import apply_rope
from .reference import (
    apply_rope_reference,
    kv_head_index,
    permute_rope_rows,
    repeat_kv,
    rope_2d_angles,
    rope_angles,
    rope_inv_freq,
)

__all__ = [
    "apply_rope",
    "apply_rope_reference",
    "kv_head_index",
    "permute_rope_rows",
    "repeat_kv",
    "rope_2d_angles",
    "rope_angles",
    "rope_inv_freq",
]
