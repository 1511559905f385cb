"""Convert a local Hugging Face LLaMA-family checkpoint to a GGUF file (F16 or F32).

Uses the `gguf` package's writer, tensor-name map and special-vocab helper, the way llama.cpp's
own converter does, but only for the architectures in `architectures.ARCHITECTURES`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from quantize.llm.architectures import ArchSpec, UnsupportedModel, arch_for
from quantize.llm.vocab import add_vocab, build_vocab

log = logging.getLogger(__name__)
OUT_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}
SKIPPED_SUFFIXES = (".rotary_emb.inv_freq",)


REQUIRED_HPARAMS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def read_config(model_dir: Path) -> dict[str, Any]:
    """`config.json`, refused in one line when it lacks a size the GGUF header needs."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UnsupportedModel(f"{model_dir} is not a Hugging Face checkpoint (no config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedModel(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UnsupportedModel(f"{path} must hold a JSON object")
    for key in REQUIRED_HPARAMS:
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UnsupportedModel(
                f"{path}: {key!r} is {'missing' if value is None else repr(value)}; "
                "a LLaMA-family config.json gives it as a positive whole number"
            )
    return config


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from HF's rotate-half layout to llama.cpp's interleaved pairs."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def iter_tensors(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor of the checkpoint as float32 numpy (safetensors, any dtype incl. bf16)."""
    import torch
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UnsupportedModel(f"{model_dir} has no .safetensors weights")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, handle.get_tensor(name).to(torch.float32).numpy()


def _hparams(writer: gguf.GGUFWriter, config: dict[str, Any], spec: ArchSpec, ftype: int, name: str) -> None:
    n_head = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise UnsupportedModel(f"rope_scaling {scaling!r} is not supported by this converter")
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads", n_head)))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_dimension_count(int(config.get("head_dim", hidden // n_head)))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def convert_checkpoint(
    model_dir: Path, out_file: Path, *, out_type: str = "f16", tokenizer_pre: str | None = None
) -> dict[str, Any]:
    """Write `out_file` (through a temporary name) and return a summary of what was written."""
    model_dir = Path(model_dir)
    if out_type not in OUT_TYPES:
        raise UnsupportedModel(f"output type {out_type!r}: choose one of {', '.join(OUT_TYPES)}")
    config = read_config(model_dir)
    spec = arch_for(config)
    vocab = build_vocab(model_dir, int(config["vocab_size"]), tokenizer_pre)
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads", n_head))
    n_blocks = int(config["num_hidden_layers"])
    tied = bool(config.get("tie_word_embeddings", False))
    name_map = gguf.get_tensor_name_map(spec.gguf_arch, n_blocks)

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.partial")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[spec.gguf_arch])
    written: list[str] = []
    try:
        _hparams(writer, config, spec, OUT_TYPES[out_type], model_dir.name)
        add_vocab(writer, model_dir, vocab)
        for hf_name, data in iter_tensors(model_dir):
            if hf_name.endswith(SKIPPED_SUFFIXES):
                continue
            if tied and hf_name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd when output.weight is absent
            if spec.permute_qk and hf_name.endswith("q_proj.weight"):
                data = permute_qk(data, n_head)
            elif spec.permute_qk and hf_name.endswith("k_proj.weight"):
                data = permute_qk(data, n_head_kv)
            gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise UnsupportedModel(f"tensor {hf_name!r} has no GGUF name for {spec.hf_name}")
            if out_type == "f16" and data.ndim > 1:
                data = data.astype(np.float16)
            writer.add_tensor(gguf_name, data)
            written.append(gguf_name)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_file)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%d tensors, %s)", out_file, len(written), out_type)
    return {
        "architecture": spec.hf_name,
        "gguf_arch": gguf.MODEL_ARCH_NAMES[spec.gguf_arch],
        "tensors": len(written),
        "tied_embeddings": tied,
        "tokenizer": {"model": vocab.model, "pre": vocab.pre, "tokens": len(vocab.tokens)},
        "out_type": out_type,
    }
