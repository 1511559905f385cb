"""Registry of the causal-LM architectures the GGUF converter supports, and how each differs."""

from __future__ import annotations

from dataclasses import dataclass

import gguf


class UnsupportedModel(Exception):
    """The checkpoint is of an architecture or layout the converter does not handle."""


@dataclass(frozen=True)
class ArchSpec:
    """What the converter must know about one Hugging Face architecture."""

    hf_name: str
    gguf_arch: gguf.MODEL_ARCH
    # llama.cpp's LLaMA graph expects q/k rows interleaved per rotary pair, not HF's half split.
    permute_qk: bool


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.hf_name: spec
    for spec in (
        ArchSpec("LlamaForCausalLM", gguf.MODEL_ARCH.LLAMA, permute_qk=True),
        ArchSpec("MistralForCausalLM", gguf.MODEL_ARCH.LLAMA, permute_qk=True),
        ArchSpec("Qwen2ForCausalLM", gguf.MODEL_ARCH.QWEN2, permute_qk=False),
    )
}


def arch_for(config: dict) -> ArchSpec:
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    supported = ", ".join(sorted(ARCHITECTURES))
    raise UnsupportedModel(
        f"architecture {names or config.get('model_type')!r} is not supported; supported: {supported} "
        "(the LLaMA family: RMSNorm, RoPE, grouped-query attention, tied or untied embeddings)"
    )
