"""Carry a Hugging Face tokenizer into GGUF metadata (byte-level BPE and SentencePiece-style)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from quantize.llm.architectures import UnsupportedModel

# Regexes of the pre-tokenizers llama.cpp knows, keyed to its `tokenizer.ggml.pre` names.
LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
QWEN2_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


@dataclass(frozen=True)
class GgufVocab:
    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece-style)
    pre: str | None
    tokens: list[str]
    scores: list[float] | None
    types: list[int]


def _load_tokenizer_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise UnsupportedModel(
            f"{model_dir} has no tokenizer.json: the converter needs the fast (tokenizers) file to carry the "
            "vocabulary into the GGUF"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _steps(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [step for child in node.get("pretokenizers", []) for step in _steps(child)]
    return [node]


def detect_pre(tokenizer: dict[str, Any]) -> str:
    """Name llama.cpp's pre-tokenizer that matches the tokenizer.json's, or refuse."""
    steps = _steps(tokenizer.get("pre_tokenizer"))
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = steps[0].get("pattern", {}).get("Regex")
        if pattern == LLAMA3_REGEX:
            return "llama-bpe"
        if pattern == QWEN2_REGEX:
            return "qwen2"
    raise UnsupportedModel(
        f"unrecognised pre-tokenizer {kinds}; pass --tokenizer-pre with llama.cpp's name for it "
        "(gpt-2, smollm, llama-bpe, qwen2, …)"
    )


def _is_sentencepiece_style(tokenizer: dict[str, Any]) -> bool:
    """LLaMA-2-style tokenizers: BPE over "▁"-prefixed pieces with byte fallback."""
    if tokenizer.get("model", {}).get("byte_fallback"):
        return True
    return any(step.get("type") == "Metaspace" for step in _steps(tokenizer.get("pre_tokenizer")))


def build_vocab(model_dir: Path, vocab_size: int, pre_override: str | None = None) -> GgufVocab:
    """Token list, scores and types in id order, padded to the model's embedding rows."""
    tokenizer = _load_tokenizer_json(model_dir)
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE":
        raise UnsupportedModel(f"tokenizer model {model.get('type')!r} is not supported; BPE tokenizers are")
    by_id: dict[int, str] = {int(i): tok for tok, i in model["vocab"].items()}
    added = {int(entry["id"]): entry for entry in tokenizer.get("added_tokens", [])}
    for token_id, entry in added.items():
        by_id[token_id] = entry["content"]
    if max(by_id) >= vocab_size:
        raise UnsupportedModel(f"the tokenizer has ids up to {max(by_id)} but the model only {vocab_size} embeddings")

    sentencepiece = _is_sentencepiece_style(tokenizer)
    tokens: list[str] = []
    types: list[int] = []
    scores: list[float] = []
    for token_id in range(vocab_size):
        token = by_id.get(token_id)
        if token is None:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
            scores.append(-10000.0)
            continue
        tokens.append(token)
        scores.append(-1000.0 if token_id in added else -float(token_id))
        if token_id in added:
            types.append(gguf.TokenType.CONTROL if added[token_id].get("special") else gguf.TokenType.USER_DEFINED)
        elif sentencepiece and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    if sentencepiece:
        return GgufVocab("llama", pre_override or "default", tokens, scores, types)
    return GgufVocab("gpt2", pre_override or detect_pre(tokenizer), tokens, None, types)


def add_vocab(writer: gguf.GGUFWriter, model_dir: Path, vocab: GgufVocab) -> None:
    """Write tokens, merges, special tokens and the chat template into the GGUF metadata."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(vocab.tokens))
    special.add_to_gguf(writer, quiet=True)
