"""hf_compat builds and reads model outputs under whichever KV-cache field transformers uses."""

import dataclasses

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from paperbricks.core_kernels.hf_compat import cache_field, make_output, output_cache
from paperbricks.core_kernels.testing import assert_lean_import


def test_cache_field_is_a_real_field_of_the_installed_transformers():
    names = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    assert cache_field(CausalLMOutputWithPast) in names
    assert cache_field() == cache_field(BaseModelOutputWithPast)


def test_make_output_round_trips_the_cache():
    sentinel = object()
    out = make_output(CausalLMOutputWithPast, logits=torch.zeros(1, 2, 3), cache=sentinel)
    assert output_cache(out) is sentinel
    assert getattr(out, cache_field(CausalLMOutputWithPast)) is sentinel


@dataclasses.dataclass
class _OldStyle:  # the pre-rename layout
    logits: object = None
    past_key_values: object = None


def test_pre_rename_layout_is_supported():
    sentinel = object()
    out = make_output(_OldStyle, logits=1, cache=sentinel)
    assert out.past_key_values is sentinel and output_cache(out) is sentinel


def test_bad_classes_are_named():
    with pytest.raises(TypeError, match="ModelOutput dataclass"):
        cache_field(int)

    @dataclasses.dataclass
    class NoCache:
        logits: object = None

    with pytest.raises(TypeError, match="neither"):
        cache_field(NoCache)


def test_import_is_lean():
    assert_lean_import("paperbricks.core_kernels.hf_compat")
