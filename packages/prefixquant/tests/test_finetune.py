"""Block-wise fine-tuning (oracle 7): the block MSE goes down; weights end up on their grid."""

from __future__ import annotations

import pytest
import torch

from paperbricks.prefixquant.calibrate import calibrate_, weight_quantizers
from paperbricks.prefixquant.config import PrefixQuantConfig
from paperbricks.prefixquant.finetune import block_loss, finetune_
from paperbricks.prefixquant.quantize import insert_quantizers_

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing import tiny_llama_config

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config()).eval()
    ids = torch.randint(3, 60, (8, 16), generator=torch.Generator().manual_seed(seed))
    cfg = PrefixQuantConfig.from_preset("W4A4KV4", rotate=False, mse_init=False, **overrides)
    insert_quantizers_(model, cfg)
    calibrate_(model, ids, progress=False)
    return model, ids, cfg


def test_finetune_lowers_block_mse() -> None:
    model, ids, cfg = _setup(0, epochs=10)
    report = finetune_(model, ids, cfg, progress=False)
    assert [r["layer"] for r in report] == [0, 1]
    for r in report:
        assert r["after"] < r["before"], r


def test_finetune_stores_quantized_weights_in_place() -> None:
    model, ids, cfg = _setup(1, epochs=1)
    finetune_(model, ids, cfg, progress=False)
    for name, lin in weight_quantizers(model):
        wq = lin.weight_quantizer
        with torch.no_grad():
            codes = wq.codes(lin.weight).float()
            assert torch.equal(codes * wq.scale, lin.weight), name  # W = q·s exactly
            assert torch.equal(wq(lin.weight), lin.weight), name  # so Q(W) = W


def test_clip_grad_is_honoured(monkeypatch) -> None:
    calls = []
    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        calls.append(max_norm)
        return orig(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    model, ids, cfg = _setup(2, epochs=1, clip_grad=0.3, train_batch_size=4)
    finetune_(model, ids, cfg, progress=False)
    assert calls and set(calls) == {0.3}
    calls.clear()
    model, ids, cfg = _setup(2, epochs=1)
    finetune_(model, ids, cfg, progress=False)
    assert not calls  # clip_grad=None: the official runs never clipped


def test_skip_mse_masks_top3_tokens() -> None:
    target = torch.zeros(2, 6, 4)
    target[0, [1, 3, 5]] = 50.0
    target[1, [0, 2, 4]] = -50.0
    out = torch.zeros(2, 6, 4)
    assert float(block_loss(out, target, "skip_mse")) == 0.0
    assert float(block_loss(out, target, "mse")) == pytest.approx(1250.0)
    out[0, 0] = 1.0
    assert float(block_loss(out, target, "skip_mse")) == pytest.approx(1.0 / 6)


def test_finetune_needs_epochs() -> None:
    model, ids, cfg = _setup(3)
    with pytest.raises(ValueError, match="epochs"):
        finetune_(model, ids, cfg, progress=False)


def test_finetune_through_the_prefix_cache() -> None:
    from transformers import LlamaForCausalLM

    from paperbricks.core_kernels.testing import tiny_llama_config
    from paperbricks.prefixquant.prefix import PrefixedCausalLM, PrefixSpec

    torch.manual_seed(4)
    model = LlamaForCausalLM(tiny_llama_config()).eval()
    ids = torch.randint(3, 60, (4, 12), generator=torch.Generator().manual_seed(4))
    prefixed = PrefixedCausalLM(model, PrefixSpec(ids=[1]), cache_dtype=torch.float32)
    cfg = PrefixQuantConfig.from_preset("W4A4KV4", rotate=False, mse_init=False, epochs=3)
    insert_quantizers_(model, cfg)
    calibrate_(model, ids, prefix=prefixed, progress=False)
    report = finetune_(model, ids, cfg, prefix=prefixed, progress=False)
    assert len(report) == 2 and all(r["after"] < r["before"] for r in report)
    with torch.no_grad():
        assert prefixed(input_ids=ids).logits.shape == (4, 12, 66)
