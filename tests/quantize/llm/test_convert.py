"""GGUF conversion parity: llama.cpp on our F32 GGUF must match transformers on the checkpoint."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

from quantize.llm.architectures import UnsupportedModel
from quantize.llm.convert import convert_checkpoint

PROMPTS = [
    "Where is my refund for order 12345?",
    "  double  spaces,\ttabs\nand newlines\n\n",
    "emoji 🙂🛒 café 2024-11-24",
    "<|im_start|>user\ncancel my order<|im_end|>\n<|im_start|>assistant\n",
]


@contextlib.contextmanager
def quiet_stderr():
    """llama.cpp prints its load log on fd 2; keep test output readable."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def llama_logits(gguf_file: Path, text: str) -> tuple[list[int], np.ndarray]:
    from llama_cpp import Llama

    with quiet_stderr():
        llm = Llama(model_path=str(gguf_file), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.eval(tokens)
    return tokens, np.array(llm.scores[: len(tokens)])


def assert_same_top1_where_decisive(ours: np.ndarray, ref: np.ndarray, margin: float = 0.05) -> None:
    """Top-1 must agree wherever the reference's top two are further apart than float noise."""
    top2 = np.sort(ref, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > margin
    assert decisive.mean() > 0.5  # most positions are decisive, so the check has teeth
    assert (ours.argmax(axis=1) == ref.argmax(axis=1))[decisive].all()


def hf_logits(model_dir: Path, text: str) -> tuple[list[int], np.ndarray]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
    return ids, logits


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_tied", "tiny_qwen2"])
def test_f32_gguf_matches_transformers(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    out = tmp_path / "model.f32.gguf"
    summary = convert_checkpoint(model_dir, out, out_type="f32")
    assert summary["tokenizer"]["model"] == "gpt2"
    for prompt in PROMPTS:
        ours_ids, ours = llama_logits(out, prompt)
        ref_ids, ref = hf_logits(model_dir, prompt)
        assert ours_ids == ref_ids, prompt
        assert (ours.argmax(axis=1) == ref.argmax(axis=1)).all(), prompt
        np.testing.assert_allclose(ours, ref, atol=2e-3 * max(1.0, np.abs(ref).max()))


def test_tied_embeddings_write_no_output_tensor(tiny_llama_tied: Path, tiny_llama: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    tied = convert_checkpoint(tiny_llama_tied, tmp_path / "tied.gguf")
    untied = convert_checkpoint(tiny_llama, tmp_path / "untied.gguf")
    assert tied["tensors"] == untied["tensors"] - 1
    names = {t.name for t in GGUFReader(tmp_path / "tied.gguf").tensors}
    assert "output.weight" not in names and "token_embd.weight" in names


def test_metadata_carries_tokenizer_and_template(tiny_llama: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    convert_checkpoint(tiny_llama, tmp_path / "m.gguf")
    fields = GGUFReader(tmp_path / "m.gguf").fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    assert types[tokens.index("<|im_end|>")] == 3  # CONTROL
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokens.index("<|im_end|>")


def test_unsupported_architecture_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    import json
    import shutil

    copy = shutil.copytree(tiny_llama, tmp_path / "gpt")
    config = json.loads((copy / "config.json").read_text())
    config["architectures"] = ["GPTNeoXForCausalLM"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match="LlamaForCausalLM"):
        convert_checkpoint(copy, tmp_path / "x.gguf")
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".*partial")) == []


def test_missing_tokenizer_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(tiny_llama, tmp_path / "notok")
    (copy / "tokenizer.json").unlink()
    with pytest.raises(UnsupportedModel, match=r"tokenizer\.json"):
        convert_checkpoint(copy, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize(("key", "value"), [("vocab_size", None), ("vocab_size", "49152"), ("hidden_size", 0)])
def test_config_without_a_usable_size_is_one_clear_line(
    tiny_llama: Path, tmp_path: Path, key: str, value: object
) -> None:
    import json
    import shutil

    from click.testing import CliRunner

    from quantize.cli import main as quantize_main

    copy = shutil.copytree(tiny_llama, tmp_path / "novocab")
    config = json.loads((copy / "config.json").read_text())
    if value is None:
        del config[key]
    else:
        config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModel, match=key):
        convert_checkpoint(copy, tmp_path / "x.gguf")
    result = CliRunner().invoke(
        quantize_main, ["llm", "--checkpoint", str(copy), "--out", str(tmp_path / "out"), "--no-progress"]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    error = result.stderr.splitlines()[-1]  # after the pipeline's "converting …" log line
    assert error.startswith("error: ") and f"'{key}' is " in error and "positive whole number" in error
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr
    assert not (tmp_path / "out").exists()


SPM_PROMPTS = [
    "Where is my refund for order 12345?",
    "cancel  my order",
    "emoji 😀 and 東京 straße",  # characters outside the vocabulary go through byte fallback
]


def test_sentencepiece_style_tokenizer_matches_transformers(tiny_llama_sentencepiece: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    out = tmp_path / "spm.f32.gguf"
    summary = convert_checkpoint(tiny_llama_sentencepiece, out, out_type="f32")
    assert summary["tokenizer"]["model"] == "llama"
    fields = GGUFReader(out).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert fields["tokenizer.ggml.token_type"].contents()[tokens.index("<0x41>")] == 6  # BYTE
    for prompt in SPM_PROMPTS:
        ours_ids, ours = llama_logits(out, prompt)
        ref_ids, ref = hf_logits(tiny_llama_sentencepiece, prompt)
        assert ours_ids == ref_ids, prompt
        assert_same_top1_where_decisive(ours, ref)
        np.testing.assert_allclose(ours, ref, atol=2e-3 * max(1.0, np.abs(ref).max()))
