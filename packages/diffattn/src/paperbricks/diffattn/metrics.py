"""Analysis metrics of the Differential Transformer paper (arXiv 2410.05258, §3.4 Fig. 5/Table 3, §3.8).

- :func:`attention_allocation`: the attention mass that the query position puts on the answer
  span and on the noise (filler) context, per layer and head, averaged over the batch — the
  paper's "attention score allocated to answer span / noise context" (Table 3). For DIFF pass
  the *differential* map ``A1 − λ·A2`` (its rows sum to ``1 − λ``, and entries may be negative);
  ``normalize=True`` divides every row by its sum so that both architectures are compared on a
  distribution that sums to one.
- :func:`retrieval_accuracy`: whether the argmax over the whole vocabulary at each query
  position is the right number.
- :func:`max_activations`: the largest absolute hidden-state value after every layer (the
  paper's "top activation values", §3.8), from ``output_hidden_states``.

What differs from the obvious baseline: allocation is read from the query row only (the ``?``
token that predicts the answer), not averaged over every row of the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .tasks import NeedleBatch

__all__ = [
    "AttentionAllocation",
    "attention_allocation",
    "max_activations",
    "retrieval_accuracy",
]


@dataclass
class AttentionAllocation:
    """Attention mass of the query rows, per layer and head (means over batch and queries).

    Attributes:
        answer: (layers, H) float64 mass on the answer span.
        noise: (layers, H) float64 mass on the noise (filler) positions.
        total: (layers, H) float64 row sum (1 for softmax maps, ``1 − λ`` for differential maps
            before ``normalize``; 1 after it).
    """

    answer: torch.Tensor
    noise: torch.Tensor
    total: torch.Tensor

    @property
    def answer_mean(self) -> float:
        """Answer mass averaged over layers and heads."""
        return float(self.answer.mean())

    @property
    def noise_mean(self) -> float:
        """Noise mass averaged over layers and heads."""
        return float(self.noise.mean())

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python form: means and the per-layer (head-averaged) values."""
        return {
            "answer": self.answer_mean,
            "noise": self.noise_mean,
            "answer_per_layer": self.answer.mean(dim=1).tolist(),
            "noise_per_layer": self.noise.mean(dim=1).tolist(),
        }


def _as_layers(maps: object) -> list[torch.Tensor]:
    if isinstance(maps, torch.Tensor):
        if maps.dim() == 4:
            return [maps]
        if maps.dim() == 5:
            return list(maps.unbind(0))
        raise ValueError(
            f"maps: expected (B, H, T, S) or (layers, B, H, T, S), got shape {tuple(maps.shape)}"
        )
    if isinstance(maps, Sequence) and not isinstance(maps, str) and len(maps) > 0:
        out = []
        for i, m in enumerate(maps):
            if not isinstance(m, torch.Tensor) or m.dim() != 4:
                got = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"maps[{i}]: expected a (B, H, T, S) tensor, got {got}")
            out.append(m)
        return out
    raise TypeError(
        "maps: expected a tensor or a non-empty sequence of (B, H, T, S) tensors (one per "
        f"layer), got {type(maps).__name__}"
    )


def attention_allocation(
    maps: Sequence[torch.Tensor] | torch.Tensor,
    answer_span: torch.Tensor,
    noise_mask: torch.Tensor,
    *,
    query_pos: torch.Tensor | None = None,
    normalize: bool = False,
) -> AttentionAllocation:
    """Attention mass of the query rows on the answer span and on the noise context.

    For every layer ``l`` and head ``h``, with ``A = maps[l][b, h]`` and query row ``q``:
    ``answer = Σ_{s ∈ span} A[q, s]`` and ``noise = Σ_{s : noise_mask[b, s]} A[q, s]``, averaged
    over the batch and the queries. With ``normalize=True`` both are divided by the row sum
    ``Σ_s A[q, s]`` first (for differential maps that sum is ``1 − λ``).

    Args:
        maps: one (B, H, T, S) map per layer (a sequence, e.g. a model's ``attentions``
            output), or a stacked (layers, B, H, T, S) tensor, or a single (B, H, T, S) map.
            For DIFF the differential map ``A1 − λ·A2``.
        answer_span: (B, R, 2) or (B, 2) int ``[start, end)`` key positions of each query's
            answer (``NeedleBatch.answer_span``).
        noise_mask: (B, S) bool, True on the noise keys (``NeedleBatch.noise_mask``).
        query_pos: (B, R) or (B,) int query rows (``NeedleBatch.query_pos``); default: the
            last row ``T − 1`` for every query.
        normalize: divide each row by its sum before measuring (default False: raw mass).

    Returns:
        :class:`AttentionAllocation` with (layers, H) float64 tensors on the CPU.

    Raises:
        TypeError / ValueError: shapes that do not line up, positions out of range.

    Examples:
        >>> import torch
        >>> from paperbricks.diffattn.metrics import attention_allocation
        >>> a = torch.zeros(1, 1, 4, 4)
        >>> a[0, 0, 3] = torch.tensor([0.1, 0.6, 0.2, 0.1])  # the query row
        >>> alloc = attention_allocation(
        ...     [a], torch.tensor([[1, 2]]), torch.tensor([[False, False, True, True]])
        ... )
        >>> round(alloc.answer_mean, 6), round(alloc.noise_mean, 6)
        (0.6, 0.3)
    """
    layers = _as_layers(maps)
    b, _, t, s = layers[0].shape
    for i, m in enumerate(layers):
        if m.shape[0] != b or m.shape[2:] != (t, s):
            raise ValueError(
                f"maps[{i}]: expected (B, *, T, S) = ({b}, *, {t}, {s}) like maps[0], "
                f"got {tuple(m.shape)}"
            )
    if not isinstance(answer_span, torch.Tensor) or answer_span.dtype.is_floating_point:
        raise TypeError("answer_span: expected an int tensor of [start, end) pairs")
    span = answer_span if answer_span.dim() == 3 else answer_span.unsqueeze(1)  # (B, R, 2)
    if span.dim() != 3 or span.shape[0] != b or span.shape[2] != 2:
        raise ValueError(
            f"answer_span: expected (B, R, 2) or (B, 2) with B={b}, got {tuple(answer_span.shape)}"
        )
    r = span.shape[1]
    if (
        bool((span[..., 0] < 0).any())
        or bool((span[..., 1] > s).any())
        or bool((span[..., 1] <= span[..., 0]).any())
    ):
        raise ValueError(f"answer_span: expected 0 <= start < end <= S={s}, got {span.tolist()}")
    if not isinstance(noise_mask, torch.Tensor) or noise_mask.dtype != torch.bool:
        raise TypeError("noise_mask: expected a bool tensor of shape (B, S)")
    if noise_mask.shape != (b, s):
        raise ValueError(
            f"noise_mask: expected shape (B, S) = ({b}, {s}), got {tuple(noise_mask.shape)}"
        )
    if query_pos is None:
        qpos = torch.full((b, r), t - 1, dtype=torch.long)
    else:
        if not isinstance(query_pos, torch.Tensor) or query_pos.dtype.is_floating_point:
            raise TypeError("query_pos: expected an int tensor of shape (B, R) or (B,)")
        qpos = query_pos if query_pos.dim() == 2 else query_pos.unsqueeze(1)
        if qpos.shape != (b, r):
            raise ValueError(
                f"query_pos: expected shape (B, R) = ({b}, {r}) like answer_span, "
                f"got {tuple(query_pos.shape)}"
            )
        if bool((qpos < 0).any()) or bool((qpos >= t).any()):
            raise ValueError(f"query_pos: expected rows in [0, T={t}), got {qpos.tolist()}")

    keys = torch.arange(s)
    span_c = span.to("cpu", torch.long)
    in_span = (keys >= span_c[..., :1]) & (keys < span_c[..., 1:])  # (B, R, S)
    noise = noise_mask.to("cpu").unsqueeze(1).expand(b, r, s)  # (B, R, S)
    qpos_c = qpos.to("cpu", torch.long)

    answer_l, noise_l, total_l = [], [], []
    for m in layers:
        m = m.detach().to("cpu", torch.float64)
        h = m.shape[1]
        idx = qpos_c[:, None, :, None].expand(b, h, r, s)
        rows = m.gather(2, idx)  # (B, H, R, S)
        tot = rows.sum(-1)  # (B, H, R)
        ans = (rows * in_span[:, None]).sum(-1)  # (B, H, R)
        noi = (rows * noise[:, None]).sum(-1)  # (B, H, R)
        if normalize:
            ans, noi, tot = ans / tot, noi / tot, tot / tot
        answer_l.append(ans.mean(dim=(0, 2)))  # (H,)
        noise_l.append(noi.mean(dim=(0, 2)))
        total_l.append(tot.mean(dim=(0, 2)))
    heads = {x.shape[0] for x in answer_l}
    if len(heads) != 1:
        raise ValueError(f"maps: expected the same head count in every layer, got {sorted(heads)}")
    return AttentionAllocation(
        answer=torch.stack(answer_l), noise=torch.stack(noise_l), total=torch.stack(total_l)
    )


def retrieval_accuracy(logits: torch.Tensor, batch: NeedleBatch) -> torch.Tensor:
    """Per-query correctness: the argmax over the whole vocabulary at ``?`` is the answer.

    Args:
        logits: (B, L, V) next-token logits of a causal LM on ``batch.input_ids``.
        batch: the :class:`~paperbricks.diffattn.tasks.NeedleBatch` the logits belong to.

    Returns:
        (B, R) bool tensor on the logits' device.

    Examples:
        >>> import torch
        >>> from paperbricks.diffattn.metrics import retrieval_accuracy
        >>> from paperbricks.diffattn.tasks import multi_needle_task
        >>> b = multi_needle_task(1, 1, length=16, seed=0)
        >>> logits = torch.zeros(1, 16, b.vocab.size)
        >>> logits[0, b.query_pos[0, 0], b.targets[0, 0]] = 1.0
        >>> retrieval_accuracy(logits, b).tolist()
        [[True]]
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits: expected a (B, L, V) tensor, got {got}")
    b, length = batch.input_ids.shape
    if logits.shape[:2] != (b, length):
        raise ValueError(
            f"logits: expected (B, L) = ({b}, {length}) like batch.input_ids, "
            f"got {tuple(logits.shape[:2])}"
        )
    qpos = batch.query_pos.to(logits.device)  # (B, R)
    at_query = logits.gather(1, qpos[..., None].expand(-1, -1, logits.shape[-1]))  # (B, R, V)
    return at_query.argmax(-1) == batch.targets.to(logits.device)


@torch.no_grad()
def max_activations(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, Any]:
    """Largest absolute hidden-state values (paper §3.8, "activation outliers").

    Runs ``model(input_ids=..., output_hidden_states=True)`` and takes the largest
    ``|hidden state|`` of every entry after the embeddings (``output.hidden_states[1:]``: the
    layer outputs, as the maintainers specify in unilm issue #1666; in HF Llama-style models the
    last entry is taken after the final norm).

    Args:
        model: a causal LM that accepts ``output_hidden_states``.
        input_ids: (B, L) int64 token ids.

    Returns:
        ``{"hidden_max": float, "hidden_max_per_layer": list[float]}``.

    Raises:
        ValueError: ``input_ids`` not (B, L), or the model returned no hidden states.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids: expected a (B, L) int tensor")
    out = model(input_ids=input_ids, output_hidden_states=True)
    hidden = getattr(out, "hidden_states", None)
    if not hidden or len(hidden) < 2:
        raise ValueError("model: its output has no per-layer hidden_states")
    per_layer = [float(h.detach().abs().max()) for h in hidden[1:]]
    return {"hidden_max": max(per_layer), "hidden_max_per_layer": per_layer}
