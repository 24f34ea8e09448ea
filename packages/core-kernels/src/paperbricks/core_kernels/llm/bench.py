"""Benchmark of the local chat backend's two hot paths (no kernels here; plain PyTorch).

- ``score_choices``: one right-padded batch for all candidates vs the baseline "one forward pass
  per candidate" (``batch_size=1``), 8 candidates of 1-3 words (64 with ``quick=False``).
- ``chat``: the backend's greedy KV-cache loop vs ``transformers`` ``generate(do_sample=False)``
  on the same model and prompt (both stop at EOS, so they do the same work).

Models are random tiny Llamas from :func:`~paperbricks.core_kernels.testing.factories.tiny_llama_config`
(hidden 32, 2 layers) on the CPU; on CUDA a wider one (hidden 1024, 8 layers, ~120M parameters)
so the GPU numbers mean something. There is no Triton here, so nothing
runs in the Triton interpreter; quick mode on a CPU takes about 10 s of CPU time (most of it importing transformers).

Not registered as a ``paperbricks.benchmarks`` entry point yet (the lead owns pyproject.toml);
run it with ``python -m paperbricks.core_kernels.llm.bench``.
"""

from __future__ import annotations

from ..testing import BenchResult, bench

__all__ = ["run"]


def run(*, quick: bool = True, device: str = "auto") -> list[BenchResult]:
    """Time ``score_choices`` and greedy ``chat`` against their named baselines.

    Args:
        quick: 8 candidates and 8 new tokens, fewer repetitions (default True); otherwise 64
            and 64. The model is tiny on the CPU and wider on CUDA either way.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns:
        two :class:`~paperbricks.core_kernels.testing.BenchResult` rows.
    """
    import torch
    from transformers import LlamaForCausalLM

    from ..devices import resolve_device
    from ..testing.factories import TINY_WORDS, tiny_llama_config, tiny_tokenizer
    from .transformers_backend import TransformersBackend

    dev = resolve_device(device)
    big = dev.type == "cuda"
    overrides = (
        {
            "hidden_size": 1024,
            "intermediate_size": 2816,
            "num_hidden_layers": 8,
            "num_attention_heads": 16,
            "num_key_value_heads": 4,
        }
        if big
        else {}
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(0)
        model = LlamaForCausalLM(tiny_llama_config(**overrides)).eval()
    tok = tiny_tokenizer()
    msgs = [{"role": "user", "content": "move up or down ?"}]
    n_cands = 8 if quick else 64
    words = list(TINY_WORDS)
    cands = [
        " ".join(words[(i + j) % len(words)] for j in range(1 + i % 3)) for i in range(n_cands)
    ]
    batched = TransformersBackend(model, tok, device=dev, batch_size=n_cands)
    looped = TransformersBackend(model, tok, device=dev, batch_size=1)
    reps = {"warmup": 1, "rep": 5} if quick else {"warmup": 3, "rep": 10}
    meta = {
        "model": f"llama hidden={model.config.hidden_size} layers={model.config.num_hidden_layers}"
    }
    rows = [
        bench(
            lambda: batched.score_choices(msgs, cands),
            lambda: looped.score_choices(msgs, cands),
            name=f"score_choices {n_cands} cands, padded batch",
            baseline_name="one forward per candidate",
            device=dev.type,
            meta=meta,
            **reps,
        )
    ]
    n_new = 8 if quick else 64
    ids = torch.tensor([batched._prompt_ids(msgs)[1]], device=dev)

    def hf_generate() -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=n_new,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )

    rows.append(
        bench(
            lambda: batched.chat(msgs, max_tokens=n_new),
            hf_generate,
            name=f"chat greedy {n_new} tokens (KV-cache loop)",
            baseline_name="transformers generate(do_sample=False)",
            device=dev.type,
            meta=meta,
            **reps,
        )
    )
    return rows


if __name__ == "__main__":
    for row in run(quick=True, device="cpu"):
        print(row.row())
