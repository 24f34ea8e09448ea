"""Chat backend for a local Hugging Face causal LM (a checkpoint directory or a model object).

Nothing is downloaded: directories load with ``local_files_only=True``. The prompt is the
tokenizer's chat template (``add_generation_prompt=True``) when it has one, otherwise the plain
fallback ``"system: ...\\nuser: ...\\nassistant:"``.

Decoding is a small explicit loop over the KV cache rather than ``model.generate``, so that
sampling can use a private seeded ``torch.Generator`` (no global RNG) and stop strings are
checked on the decoded text:

- ``temperature == 0``: greedy, ``y_t = argmax_v logits_t[v]``;
- ``temperature > 0``: ``y_t ~ softmax(logits_t / temperature)`` drawn with the generator.

:meth:`TransformersBackend.score_choices` computes, for each candidate ``c`` tokenized as a
continuation of the prompt ``x``, ``score(c) = Σ_{t=1}^{|c|} log p(c_t | x, c_<t)`` in one padded
batch per ``batch_size`` candidates.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
from collections.abc import Sequence
from typing import Any

from ..hf_compat import output_cache
from .base import (
    ChatBackendError,
    ChatResult,
    Message,
    check_candidates,
    check_chat_args,
    text_only,
)

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)

_HF_HINT = "pip install 'paperbricks-core-kernels[hf]'"


def _import_hf() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the hf extra is installed in the test env
        raise ImportError(
            f"TransformersBackend needs transformers and tokenizers: {_HF_HINT}"
        ) from err
    return transformers


class TransformersBackend:
    """Chat with (and score choices under) a local transformers causal LM.

    Args:
        path_or_model: a local checkpoint directory (``str`` / ``os.PathLike``; loaded with
            ``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)``) or an already
            built model (``PreTrainedModel`` returning ``.logits``).
        tokenizer: a tokenizer object, a local tokenizer directory, or None (default): load it
            from ``path_or_model`` when that is a directory; required when a model object is given.
        device: where the model runs (default ``"cpu"``). The model is moved there and put in
            eval mode; for a model object this happens in place (``nn.Module.to``/``eval``).
        dtype: optional ``torch.dtype`` to load/cast the model in (default: as saved).
        batch_size: candidates per forward pass in :meth:`score_choices` (default 16).

    Raises:
        FileNotFoundError: ``path_or_model`` (or a tokenizer path) is not an existing directory;
            nothing is downloaded.
        ValueError: a model object without a tokenizer, or a tokenizer without an EOS token id.
        ImportError: transformers missing (``pip install 'paperbricks-core-kernels[hf]'``).

    Examples:
        >>> from transformers import LlamaForCausalLM
        >>> from paperbricks.core_kernels.llm import TransformersBackend
        >>> from paperbricks.core_kernels.testing.factories import tiny_llama_config, tiny_tokenizer
        >>> model = LlamaForCausalLM(tiny_llama_config())
        >>> backend = TransformersBackend(model, tiny_tokenizer())
        >>> msgs = [{"role": "user", "content": "move ?"}]
        >>> r = backend.chat(msgs, max_tokens=4)
        >>> r.finish_reason in ("stop", "length"), r.usage["prompt_tokens"]
        (True, 6)
        >>> len(backend.score_choices(msgs, ["up", "down", "left"]))
        3
    """

    def __init__(
        self,
        path_or_model: Any,
        tokenizer: Any = None,
        device: Any = "cpu",
        *,
        dtype: Any = None,
        batch_size: int = 16,
    ) -> None:
        import torch

        transformers = _import_hf()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype: expected a torch.dtype or None, got {type(dtype).__name__}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        if isinstance(path_or_model, (str, os.PathLike)):
            path = os.fspath(path_or_model)
            self._check_dir("path_or_model", path)
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise FileNotFoundError(
                    f"path_or_model: no config.json in {path!r}; expected a checkpoint directory written "
                    "by save_pretrained (nothing is downloaded)"
                )
            kwargs: dict[str, Any] = {"local_files_only": True}
            if dtype is not None:
                kwargs["dtype"] = dtype
            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
            except OSError as err:
                raise FileNotFoundError(
                    f"path_or_model: could not load a causal LM from local directory {path!r} "
                    f"(local_files_only=True, nothing is downloaded): {err}"
                ) from err
            if tokenizer is None:
                tokenizer = path
            self.name = path
        elif isinstance(path_or_model, torch.nn.Module):
            model = path_or_model
            if tokenizer is None:
                raise ValueError(
                    "tokenizer: required when path_or_model is a model object, got None"
                )
            if dtype is not None:
                model = model.to(dtype)
            self.name = type(model).__name__
        else:
            raise TypeError(
                "path_or_model: expected a local checkpoint directory or a torch.nn.Module, "
                f"got {type(path_or_model).__name__}"
            )
        if isinstance(tokenizer, (str, os.PathLike)):
            tok_path = os.fspath(tokenizer)
            self._check_dir("tokenizer", tok_path)
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(
                    tok_path, local_files_only=True
                )
            except (OSError, ValueError) as err:
                raise FileNotFoundError(
                    f"tokenizer: could not load a tokenizer from local directory {tok_path!r} "
                    f"(local_files_only=True): {err}"
                ) from err
        if not callable(getattr(tokenizer, "encode", None)) or not callable(
            getattr(tokenizer, "decode", None)
        ):
            raise TypeError(
                f"tokenizer: expected a transformers tokenizer, got {type(tokenizer).__name__}"
            )
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self._eos_ids = self._eos_token_ids()
        # transformers 5 renamed the KV-cache argument `past_key_values` to `cache`.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @staticmethod
    def _check_dir(arg: str, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"{arg}: {path!r} is not an existing local directory; TransformersBackend only loads "
                "local checkpoints (local_files_only=True) and never downloads"
            )

    def _eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        gen_cfg = getattr(self.model, "generation_config", None)
        cfg_eos = getattr(gen_cfg, "eos_token_id", None) if gen_cfg is not None else None
        if isinstance(cfg_eos, int):
            ids.add(cfg_eos)
        elif isinstance(cfg_eos, (list, tuple)):
            ids.update(int(i) for i in cfg_eos)
        if not ids:
            raise ValueError(
                "tokenizer: has no eos_token_id (and the model's generation config names none)"
            )
        return ids

    @property
    def supports_scoring(self) -> bool:
        """Always True: local models expose their log-likelihoods."""
        return True

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer carries a chat template (otherwise the plain fallback is used)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The prompt text for ``messages``, ending where the assistant reply starts.

        With a chat template: ``tokenizer.apply_chat_template(messages, tokenize=False,
        add_generation_prompt=True)``. Without: ``"role: content"`` lines followed by
        ``"assistant:"``.
        """
        msgs = text_only(messages, "TransformersBackend")
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=True
            )
        lines = [f"{m['role']}: {m['content']}" for m in msgs]
        return "\n".join([*lines, "assistant:"])

    def _prompt_ids(self, messages: Sequence[Message]) -> tuple[str, list[int]]:
        prompt = self.render_prompt(messages)
        # A chat template already writes BOS and friends; the plain fallback gets the tokenizer's.
        ids = self.tokenizer.encode(prompt, add_special_tokens=not self.has_chat_template)
        if len(ids) == 0:
            raise ValueError("messages: the rendered prompt tokenizes to zero tokens")
        return prompt, list(ids)

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        json_mode: bool = False,
    ) -> ChatResult:
        """Generate a reply (greedy at temperature 0, otherwise seeded sampling).

        Args: see :class:`~paperbricks.core_kernels.llm.ChatBackend`. ``seed`` seeds a private
        ``torch.Generator`` (None draws a fresh seed from the OS, recorded in ``raw["seed"]``).
        ``json_mode`` is advisory here (no constrained decoding); validate with
        :func:`~paperbricks.core_kernels.llm.extract_json`.

        Returns:
            :class:`ChatResult`; ``text`` is decoded without special tokens and cut before the
            earliest stop string; ``finish_reason`` is ``"stop"`` on EOS or a stop string,
            ``"length"`` at ``max_tokens``; ``raw`` holds ``prompt``, ``token_ids`` and ``seed``.
        """
        import torch

        stops = check_chat_args(
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            seed=seed,
            json_mode=json_mode,
        )
        prompt, prompt_ids = self._prompt_ids(messages)
        if seed is None and temperature > 0:
            seed = random.SystemRandom().getrandbits(63)
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))

        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)  # (1, T)
        generated: list[int] = []
        finish = "length"
        stopped_text: str | None = None
        past = None
        with torch.inference_mode():
            step_input = ids
            for _ in range(max_tokens):
                out = self.model(input_ids=step_input, use_cache=True, **{self._cache_kwarg: past})
                past = output_cache(out)
                logits = out.logits[0, -1].float()  # (V,)
                if temperature == 0:
                    next_id = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    next_id = int(torch.multinomial(probs, 1, generator=generator))
                if next_id in self._eos_ids:
                    finish = "stop"
                    break
                generated.append(next_id)
                if stops:
                    text = self.tokenizer.decode(generated, skip_special_tokens=True)
                    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                    if cut >= 0:
                        stopped_text = text[:cut]
                        finish = "stop"
                        break
                step_input = torch.tensor(
                    [[next_id]], dtype=torch.long, device=self.device
                )  # (1, 1)
        if stopped_text is not None:
            text = stopped_text
        else:
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
        usage = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(generated),
            "total_tokens": len(prompt_ids) + len(generated),
        }
        raw = {"prompt": prompt, "token_ids": generated, "seed": seed}
        return ChatResult(text, finish, usage, raw)

    def score_choices(self, messages: Sequence[Message], choices: Sequence[str]) -> list[float]:
        """Summed token log-likelihood of each choice as the assistant's reply.

        ``score(c) = Σ_t log softmax(logits(x ⊕ c)_{|x|+t-1})[c_t]``, with ``x`` the rendered
        prompt and ``c`` the choice tokenized on its own (no special tokens). Choices are
        right-padded into batches of ``batch_size``; padding sits after every scored position,
        so with causal attention it cannot change a score.

        Args:
            messages: the conversation (role/content dicts).
            choices: non-empty sequence of non-empty strings.

        Returns:
            ``list[float]`` of log-likelihoods (<= 0), one per choice.

        Raises:
            ValueError: a choice tokenizes to zero tokens.
        """
        import torch

        cands = check_candidates(choices)
        _, prompt_ids = self._prompt_ids(messages)
        cont_ids = []
        for i, c in enumerate(cands):
            toks = list(self.tokenizer.encode(c, add_special_tokens=False))
            if not toks:
                raise ValueError(f"choices[{i}]: {c!r} tokenizes to zero tokens")
            cont_ids.append(toks)
        p = len(prompt_ids)
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(cont_ids), self.batch_size):
                chunk = cont_ids[start : start + self.batch_size]
                width = p + max(len(c) for c in chunk)
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
                target_mask = torch.zeros((len(chunk), width - 1), dtype=torch.bool)  # (B, T-1)
                for b, c in enumerate(chunk):
                    ids[b, : p + len(c)] = torch.tensor(prompt_ids + c)
                    mask[b, : p + len(c)] = 1
                    # logits at position j predict token j+1; the choice occupies p .. p+len-1
                    target_mask[b, p - 1 : p - 1 + len(c)] = True
                ids, mask, target_mask = (
                    ids.to(self.device),
                    mask.to(self.device),
                    target_mask.to(self.device),
                )
                logits = self.model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
                token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
                summed = (token_logp * target_mask).sum(dim=-1)  # (B,)
                scores.extend(float(s) for s in summed.cpu())
        if any(s != s for s in scores):
            raise ChatBackendError("score_choices: the model produced NaN log-likelihoods")
        return scores

    def __repr__(self) -> str:
        return f"TransformersBackend({self.name!r}, device={str(self.device)!r})"
