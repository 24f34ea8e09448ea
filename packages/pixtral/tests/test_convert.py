"""Official mistral-inference layout <-> HF layout: outputs preserved, exact round trip, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from paperbricks.core_kernels.testing import assert_bitwise_equal
from paperbricks.pixtral.convert import hf_to_mistral, mistral_to_hf
from paperbricks.pixtral.models import PixtralVisionConfig, PixtralVisionModel

CFG = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    patch_size=4,
)


def _official_forward(sd: dict, cfg: PixtralVisionConfig, img: torch.Tensor) -> torch.Tensor:
    """Independent oracle written the mistral-inference way: interleaved pairs rotated by complex
    multiplication with freqs_cis built as [height | width], dense attention per image."""
    p, d, nh = cfg.patch_size, cfg.head_dim, cfg.num_attention_heads
    x = F.conv2d(img[None].double(), sd["patch_conv.weight"].double(), stride=p)[0]  # (d, h, w)
    h, w = x.shape[-2:]
    x = x.flatten(1).T  # (N, d)

    def rms(t, g):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * g.double()

    freqs = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, d, 2).double() / d))
    fh = torch.outer(torch.arange(h).double(), freqs[0::2])  # (h, d/4)
    fw = torch.outer(torch.arange(w).double(), freqs[1::2])  # (w, d/4)
    f2d = torch.cat([fh[:, None, :].expand(h, w, -1), fw[None, :, :].expand(h, w, -1)], dim=-1)
    cis = torch.polar(torch.ones_like(f2d), f2d).reshape(h * w, d // 2)  # (N, d/2) complex

    def rot(t):  # t (N, H, D), interleaved pairs
        tc = torch.view_as_complex(t.reshape(*t.shape[:-1], d // 2, 2).contiguous())
        return torch.view_as_real(tc * cis[:, None, :]).flatten(-2)

    x = rms(x, sd["ln_pre.weight"])
    for i in range(cfg.num_hidden_layers):
        pre = f"transformer.layers.{i}."

        def W(name, pre=pre):
            return sd[pre + name + ".weight"].double()

        y = rms(x, sd[pre + "attention_norm.weight"])
        q = rot((y @ W("attention.wq").T).view(-1, nh, d))
        k = rot((y @ W("attention.wk").T).view(-1, nh, d))
        v = (y @ W("attention.wv").T).view(-1, nh, d)
        a = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / d**0.5, dim=-1)
        o = torch.einsum("hqk,khd->qhd", a, v).reshape(-1, nh * d)
        x = x + o @ W("attention.wo").T
        y = rms(x, sd[pre + "ffn_norm.weight"])
        act = F.silu if cfg.hidden_act == "silu" else F.gelu
        x = (
            x
            + (act(y @ W("feed_forward.w1").T) * (y @ W("feed_forward.w3").T))
            @ W("feed_forward.w2").T
        )
    return x


@pytest.fixture
def official():
    """A random official-layout state dict (under the consolidated 'vision_encoder.' prefix)."""
    cfg = PixtralVisionConfig(**CFG)
    g = torch.Generator().manual_seed(0)
    model = PixtralVisionModel(cfg)
    sd = {}
    for k, v in hf_to_mistral(model.state_dict(), cfg).items():
        base = 1.0 if k.endswith("norm.weight") or k == "ln_pre.weight" else 0.0
        sd[k] = base + 0.3 * torch.randn(v.shape, generator=g)
    return cfg, sd


def test_mistral_to_hf_preserves_outputs(official):
    cfg, sd = official
    model = PixtralVisionModel(cfg).double().eval()
    model.load_state_dict(mistral_to_hf(sd, cfg), strict=True)
    imgs = [torch.randn(3, 8, 12, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    imgs.append(torch.randn(3, 12, 4, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        feats = model([i.double() for i in imgs]).image_features
    for img, f in zip(imgs, feats, strict=True):
        torch.testing.assert_close(f, _official_forward(sd, cfg, img), atol=1e-10, rtol=0)


def test_unpermuted_weights_do_not_match(official):
    """The oracle can fail: loading official Wq/Wk rows without the permutation changes output."""
    cfg, sd = official
    model = PixtralVisionModel(cfg).double().eval()
    hf = mistral_to_hf(sd, cfg)
    for i in range(cfg.num_hidden_layers):
        for n in ("q", "k"):
            hf[f"transformer.layers.{i}.attention.{n}_proj.weight"] = sd[
                f"transformer.layers.{i}.attention.w{n}.weight"
            ]
    model.load_state_dict(hf)
    img = torch.randn(3, 8, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model([img.double()]).image_features[0]
    assert (out - _official_forward(sd, cfg, img)).abs().max() > 1e-3


def test_permutation_rows_explicit(official):
    cfg, sd = official
    hf = mistral_to_hf(sd, cfg)
    d = cfg.head_dim
    wq = sd["transformer.layers.0.attention.wq.weight"]
    hq = hf["transformer.layers.0.attention.q_proj.weight"]
    for head in range(cfg.num_attention_heads):
        o = head * d
        for b in range(d // 2):
            assert torch.equal(hq[o + b], wq[o + 2 * b])
            assert torch.equal(hq[o + b + d // 2], wq[o + 2 * b + 1])
    for name in ("wv", "wo"):
        new = {"wv": "v_proj", "wo": "o_proj"}[name]
        assert torch.equal(
            hf[f"transformer.layers.1.attention.{new}.weight"],
            sd[f"transformer.layers.1.attention.{name}.weight"],
        )
    assert torch.equal(
        hf["transformer.layers.1.feed_forward.gate_proj.weight"],
        sd["transformer.layers.1.feed_forward.w1.weight"],
    )
    assert torch.equal(
        hf["transformer.layers.1.feed_forward.down_proj.weight"],
        sd["transformer.layers.1.feed_forward.w2.weight"],
    )


def test_round_trip_is_exact_with_prefixes(official):
    cfg, sd = official
    consolidated = {f"vision_encoder.{k}": v for k, v in sd.items()}
    consolidated["vision_language_adapter.w_in.weight"] = torch.zeros(2, 2)  # not the encoder's
    hf = mistral_to_hf(consolidated, cfg, src_prefix="vision_encoder.", dst_prefix="vision_tower.")
    assert all(k.startswith("vision_tower.") for k in hf)
    back = hf_to_mistral(hf, cfg, src_prefix="vision_tower.")
    assert sorted(back) == sorted(sd)
    for k in sd:
        assert_bitwise_equal(back[k], sd[k], k)


def test_converter_errors(official):
    cfg, sd = official
    with pytest.raises(ValueError, match="unexpected key"):
        mistral_to_hf({**sd, "transformer.layers.0.attention.wx.weight": torch.zeros(1)}, cfg)
    with pytest.raises(ValueError, match="unexpected key"):
        mistral_to_hf({**sd, "transformer.layers.9.ffn_norm.weight": torch.zeros(32)}, cfg)
    partial = dict(sd)
    del partial["transformer.layers.1.feed_forward.w3.weight"]
    with pytest.raises(ValueError, match="missing"):
        mistral_to_hf(partial, cfg)
    with pytest.raises(TypeError, match="config"):
        mistral_to_hf(sd, {"hidden_size": 32})
    bad = {**sd, "transformer.layers.0.attention.wq.weight": torch.zeros(30, 32)}
    with pytest.raises(ValueError, match="rows"):
        mistral_to_hf(bad, cfg)
