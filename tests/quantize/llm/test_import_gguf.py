"""Round trip with the only real LLM here: SmolLM2 GGUF → HF checkpoint → GGUF, checked for parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantize.llm.convert import convert_checkpoint
from quantize.llm.import_gguf import import_gguf
from quantize.sources import packaged_smollm2_gguf
from tests.quantize.llm.test_convert import hf_logits, llama_logits, quiet_stderr

pytestmark = pytest.mark.slow

PARITY_TEXTS = [
    "Order 1234567890 costs $12.50, or 3,000.75 in 2024",
    "  lots   of\t\twhitespace\n\n\nend ",
    "emoji 🙂🛒👍🏽 and café, naïve, 東京",
    "<|im_start|>user\nWhere is my refund?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>plain",
]


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "hf"
    import_gguf(packaged_smollm2_gguf(), out)
    return out


def test_tokenizer_matches_llama_cpp_on_the_source_gguf(smollm2: Path) -> None:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    with quiet_stderr():
        source = Llama(model_path=str(packaged_smollm2_gguf()), vocab_only=True, verbose=False)
    for text in PARITY_TEXTS:
        ours = tokenizer(text)["input_ids"]  # with the tokenizer's own special-token handling
        theirs = source.tokenize(text.encode(), add_bos=True, special=True)  # add_bos obeys the GGUF (no BOS)
        assert ours == theirs, text
        assert tokenizer.decode(ours) == text


def test_the_three_known_transformers_mistakes_are_fixed(smollm2: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"
    assert tokenizer("hi")["input_ids"][0] != tokenizer.bos_token_id  # no BOS added
    config = json.loads((smollm2 / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] != "LlamaTokenizer"
    spec = json.loads((smollm2 / "tokenizer.json").read_text())
    assert spec["model"]["byte_fallback"] is False
    assert spec["decoder"]["type"] == "ByteLevel"
    assert json.loads((smollm2 / "config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id


def test_f32_gguf_of_the_real_checkpoint_matches_transformers(smollm2: Path, tmp_path: Path) -> None:
    out = tmp_path / "smollm2.F32.gguf"
    summary = convert_checkpoint(smollm2, out, out_type="f32")
    assert summary["tied_embeddings"] and summary["tokenizer"]["pre"] == "smollm"
    prompt = "<|im_start|>user\nCan I change the delivery address of order 4411?<|im_end|>\n<|im_start|>assistant\n"
    ours_ids, ours = llama_logits(out, prompt)
    ref_ids, ref = hf_logits(smollm2, prompt)
    assert ours_ids == ref_ids
    assert (ours.argmax(axis=1) == ref.argmax(axis=1)).all()
    assert np.abs(ours - ref).max() < 0.01 * np.abs(ref).max()  # measured: 0.05 on logits up to ~38
