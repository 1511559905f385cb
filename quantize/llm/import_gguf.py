"""`quantize import-gguf`: turn a GGUF back into a Hugging Face checkpoint.

transformers dequantizes the weights; the tokenizer is rebuilt here from the GGUF's own metadata,
because transformers' GGUF tokenizer conversion gets byte-level BPE models like SmolLM2 wrong (eos
read back as `<|im_start|>`, a BOS added although the GGUF says not to, a SentencePiece-style
`LlamaTokenizer` with byte fallback instead of plain byte-level BPE).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge.bundle import sha256_file
from quantize.bundle import publish, staging_dir, write_json
from quantize.llm.architectures import UnsupportedModel
from quantize.llm.vocab import LLAMA3_REGEX, QWEN2_REGEX

log = logging.getLogger(__name__)
IMPORT_RECORD = "kiosk_import.json"
CONTROL, USER_DEFINED = 3, 4


class GgufReadError(Exception):
    """The file is not a readable GGUF."""


def read_gguf_metadata(gguf_file: Path) -> tuple[dict[str, Any], Any]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(gguf_file)
    except Exception as exc:  # gguf raises ValueError, struct errors, memmap errors on bad files
        raise GgufReadError(f"{gguf_file} is not a readable GGUF file: {exc}") from exc
    fields: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            fields[key] = field.contents()
        except Exception:
            continue
    return fields, reader


def _pre_tokenizer(pre: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("gpt-2", "default"):
        return byte_level
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    regex = {"llama-bpe": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}.get(pre)
    if regex is None:
        raise UnsupportedModel(f"GGUF pre-tokenizer {pre!r} is not supported (gpt-2, smollm, llama-bpe, qwen2)")
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_hf_tokenizer(fields: dict[str, Any], out_dir: Path) -> None:
    """A byte-level BPE `tokenizer.json` + config equivalent to the GGUF's tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise UnsupportedModel(
            f"GGUF tokenizer model {fields.get('tokenizer.ggml.model')!r} cannot be imported; byte-level BPE (gpt2) can"
        )
    tokens: list[str] = list(fields["tokenizer.ggml.tokens"])
    types: list[int] = list(fields["tokenizer.ggml.token_type"])
    merges = [tuple(merge.split(" ", 1)) for merge in fields["tokenizer.ggml.merges"]]
    model = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = _pre_tokenizer(str(fields.get("tokenizer.ggml.pre", "gpt-2")))
    tokenizer.decoder = decoders.ByteLevel()
    added = [
        AddedToken(token, special=kind == CONTROL, normalized=False)
        for token, kind in zip(tokens, types, strict=True)
        if kind in (CONTROL, USER_DEFINED)
    ]
    tokenizer.add_tokens(added)

    def token(key: str) -> str | None:
        index = fields.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(index)] if index is not None else None

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=token("bos"),
        eos_token=token("eos"),
        unk_token=token("unknown"),
        pad_token=token("padding"),
        clean_up_tokenization_spaces=False,
    )
    if fields.get("tokenizer.chat_template"):
        fast.chat_template = str(fields["tokenizer.chat_template"])
    fast.save_pretrained(out_dir)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["add_bos_token"] = bool(fields.get("tokenizer.ggml.add_bos_token", False))
    config["add_eos_token"] = bool(fields.get("tokenizer.ggml.add_eos_token", False))
    write_json(config_path, config)


def import_gguf(gguf_file: Path, out_dir: Path) -> dict[str, Any]:
    """Write a Hugging Face checkpoint (safetensors + byte-level BPE tokenizer) to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise GgufReadError(f"{gguf_file} does not exist")
    fields, reader = read_gguf_metadata(gguf_file)
    arch = fields.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise UnsupportedModel(f"GGUF architecture {arch!r} cannot be imported (llama, qwen2 can)")
    census: dict[str, int] = {}
    for tensor in reader.tensors:
        census[tensor.tensor_type.name] = census.get(tensor.tensor_type.name, 0) + 1
    with staging_dir(out_dir) as staging:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                gguf_file.parent, gguf_file=gguf_file.name, torch_dtype=torch.float32, local_files_only=True
            )
        except Exception as exc:  # transformers raises many kinds for an unreadable GGUF
            raise GgufReadError(f"transformers could not read {gguf_file}: {exc}") from exc
        tokens = list(fields["tokenizer.ggml.tokens"])
        for key, attr in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("padding", "pad_token_id")):
            index = fields.get(f"tokenizer.ggml.{key}_token_id")
            if index is not None and int(index) < len(tokens):
                setattr(model.config, attr, int(index))
                setattr(model.generation_config, attr, int(index))
        model.save_pretrained(staging, safe_serialization=True)
        build_hf_tokenizer(fields, staging)
        record = {
            "source_gguf": str(gguf_file),
            "source_sha256": sha256_file(gguf_file),
            "source_name": fields.get("general.name"),
            "source_tensor_types": census,
            "note": "weights were dequantized from this GGUF; they carry its quantization rounding",
        }
        write_json(staging / IMPORT_RECORD, record)
        publish(staging, out_dir)
    log.info("imported %s to %s", gguf_file, out_dir)
    return record
