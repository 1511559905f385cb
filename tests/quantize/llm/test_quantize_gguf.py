"""llama.cpp quantization through llama-cpp-python: every type loads and chats; bad input fails cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantize.llm.architectures import UnsupportedModel
from quantize.llm.convert import convert_checkpoint
from quantize.llm.quantize_gguf import DEFAULT_TYPES, QuantizeError, quantize_gguf, tensor_census
from tests.quantize.llm.test_convert import quiet_stderr


@pytest.fixture(scope="module")
def f16(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("f16") / "m.F16.gguf"
    convert_checkpoint(tiny_llama, out)
    return out


@pytest.mark.parametrize("quant", DEFAULT_TYPES)
def test_every_default_type_loads_and_answers_through_the_chat_template(f16: Path, tmp_path: Path, quant: str) -> None:
    from llama_cpp import Llama

    out = quantize_gguf(f16, tmp_path / f"m.{quant}.gguf", quant)
    assert out.stat().st_size < f16.stat().st_size
    census = tensor_census(out)
    assert sum(census.values()) > 0 and "F16" not in census
    with quiet_stderr():
        llm = Llama(model_path=str(out), n_ctx=128, n_threads=1, verbose=False)
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    assert reply["usage"]["completion_tokens"] >= 1
    assert reply["usage"]["prompt_tokens"] > 5  # the template wrapped the message in role markers


def test_unknown_quant_type(f16: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="unknown quant type"):
        quantize_gguf(f16, tmp_path / "x.gguf", "Q9_9")


def test_truncated_gguf_fails_cleanly(f16: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(f16.read_bytes()[: f16.stat().st_size // 2])
    with quiet_stderr(), pytest.raises(QuantizeError):
        quantize_gguf(broken, tmp_path / "out.gguf", "Q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.gguf"]


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="does not exist"):
        quantize_gguf(tmp_path / "none.gguf", tmp_path / "out.gguf", "Q8_0")
