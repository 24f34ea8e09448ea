"""Streaming first and second moments in float64.

``StreamingMoments`` keeps ``n``, ``Σx`` and ``Σxxᵀ`` (float64) and updates them one chunk of samples
at a time with a GEMM, so a covariance over millions of activations never needs them all in
memory:

    mean = Σx / n,        cov = (Σxxᵀ − n·mean·meanᵀ) / (n − 1)

Accumulators are mergeable (``a.merge(b)`` or ``a + b``), e.g. across data-parallel ranks or
shards. The raw-sum form loses precision when ``|mean|`` is much larger than the spread; the
accumulation is float64 for that reason, and a ``shift`` (a rough mean, e.g. of the first chunk)
can be given to centre the sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._checks import as_float_tensor, check_finite

__all__ = ["StreamingMoments"]


class StreamingMoments:
    """Running mean and covariance of ``D``-dimensional samples, batched over leading dims.

    Args:
        dim: the sample dimension ``D`` (>= 1).
        batch_shape: leading shape of independent accumulators, e.g. ``(L,)`` for one per layer;
            default ``()``.
        device: where the float64 accumulators live; default ``"cpu"``.
        shift: optional ``(*batch_shape, D)`` or ``(D,)`` vector subtracted from every sample
            before accumulating (numerically safer when the mean is large); it does not change
            ``mean`` or ``cov``. Default: no shift.

    Attributes:
        n: number of samples seen so far (the same for every batch entry).
        mean: ``(*batch_shape, D)`` float64.
        cov: ``(*batch_shape, D, D)`` float64, unbiased (divides by ``n − 1``; needs ``n >= 2``).

    Examples:
        >>> import torch
        >>> m = StreamingMoments(3)
        >>> x = torch.randn(100, 3)
        >>> for chunk in x.split(30):
        ...     _ = m.update(chunk)
        >>> torch.allclose(m.cov, torch.cov(x.T.double()))
        True
    """

    def __init__(
        self,
        dim: int,
        *,
        batch_shape: Sequence[int] = (),
        device: torch.device | str = "cpu",
        shift: torch.Tensor | None = None,
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        batch_shape = tuple(batch_shape)
        if any((not isinstance(b, int)) or b < 1 for b in batch_shape):
            raise ValueError(f"batch_shape: expected positive ints, got {batch_shape!r}")
        self.dim = dim
        self.batch_shape = batch_shape
        self.n = 0
        dev = torch.device(device)
        if shift is None:
            shift = torch.zeros(dim, dtype=torch.float64, device=dev)
        else:
            as_float_tensor("shift", shift, min_dim=1)
            if shift.shape[-1] != dim:
                raise ValueError(
                    f"shift: expected last dimension {dim}, got shape {tuple(shift.shape)}"
                )
            shift = shift.detach().to(device=dev, dtype=torch.float64)
        try:
            self.shift = shift.expand(*batch_shape, dim).clone()  # (*B, D)
        except RuntimeError as exc:
            raise ValueError(
                f"shift: expected shape (D,) or (*batch_shape, D) = {(*batch_shape, dim)}, "
                f"got {tuple(shift.shape)}"
            ) from exc
        self.sum = torch.zeros(*batch_shape, dim, dtype=torch.float64, device=dev)  # (*B, D)
        self.sum_outer = torch.zeros(
            *batch_shape, dim, dim, dtype=torch.float64, device=dev
        )  # (*B, D, D)

    @property
    def device(self) -> torch.device:
        return self.sum.device

    def update(self, x: torch.Tensor) -> StreamingMoments:
        """Add a chunk of samples ``x`` of shape ``(*batch_shape, N, D)`` (any real dtype).

        Returns ``self`` so calls can be chained.
        """
        as_float_tensor("x", x, min_dim=2)
        want = (*self.batch_shape, x.shape[-2], self.dim)
        if tuple(x.shape) != want:
            raise ValueError(
                f"x: expected shape (*batch_shape, N, D) = {want}, got {tuple(x.shape)}"
            )
        check_finite("x", x)
        xc = x.detach().to(device=self.device, dtype=torch.float64) - self.shift.unsqueeze(
            -2
        )  # (*B, N, D)
        self.sum += xc.sum(dim=-2)
        self.sum_outer += xc.transpose(-1, -2) @ xc
        self.n += x.shape[-2]
        return self

    def merge(self, other: StreamingMoments) -> StreamingMoments:
        """Return a new accumulator holding the samples of both ``self`` and ``other``."""
        if not isinstance(other, StreamingMoments):
            raise TypeError(f"other: expected StreamingMoments, got {type(other).__name__}")
        if other.dim != self.dim or other.batch_shape != self.batch_shape:
            raise ValueError(
                f"other: expected dim={self.dim}, batch_shape={self.batch_shape}, got "
                f"dim={other.dim}, batch_shape={other.batch_shape}"
            )
        out = StreamingMoments(self.dim, batch_shape=self.batch_shape, device=self.device)
        out.shift = self.shift.clone()
        # Re-express other's sums around self.shift: x − s = (x − s') + (s' − s).
        delta = other.shift.to(self.device) - self.shift  # (*B, D)
        o_sum = other.sum.to(self.device)
        o_outer = other.sum_outer.to(self.device)
        n_o = other.n
        o_outer = (
            o_outer
            + o_sum.unsqueeze(-1) * delta.unsqueeze(-2)
            + delta.unsqueeze(-1) * o_sum.unsqueeze(-2)
            + n_o * delta.unsqueeze(-1) * delta.unsqueeze(-2)
        )
        out.sum = self.sum + o_sum + n_o * delta
        out.sum_outer = self.sum_outer + o_outer
        out.n = self.n + n_o
        return out

    __add__ = merge

    @property
    def mean(self) -> torch.Tensor:
        """``(*batch_shape, D)`` float64 sample mean (needs ``n >= 1``)."""
        if self.n < 1:
            raise ValueError("StreamingMoments.mean: no samples seen yet (n = 0)")
        return self.sum / self.n + self.shift

    @property
    def cov(self) -> torch.Tensor:
        """``(*batch_shape, D, D)`` float64 unbiased covariance (divides by ``n − 1``)."""
        if self.n < 2:
            raise ValueError(f"StreamingMoments.cov: needs at least 2 samples, got n = {self.n}")
        m = self.sum / self.n  # (*B, D), mean of the shifted samples
        c = (self.sum_outer - self.n * m.unsqueeze(-1) * m.unsqueeze(-2)) / (self.n - 1)
        return 0.5 * (c + c.transpose(-1, -2))

    def __repr__(self) -> str:
        return f"StreamingMoments(dim={self.dim}, batch_shape={self.batch_shape}, n={self.n})"
