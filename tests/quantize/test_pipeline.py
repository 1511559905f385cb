"""End to end with the real MiniLM: fine-tune a few steps, export, quantize, load through `edge`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import load_component
from edge.inference.intent import IntentClassifier
from quantize.data import load_examples
from quantize.export import export_onnx, quantize_int8
from quantize.sources import default_encoder
from quantize.train import TrainConfig, train_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, slice_data: tuple[Path, Path]) -> tuple[Path, list[str]]:
    examples, _ = load_examples(slice_data[0])
    labels = sorted({e.label for e in examples})
    out = tmp_path_factory.mktemp("hf") / "model"
    train_classifier(default_encoder(), examples, labels, TrainConfig(epochs=1, max_length=32), out, progress=False)
    return out, labels


def test_fp32_onnx_matches_torch_and_int8_agrees(trained: tuple[Path, list[str]], tmp_path: Path, slice_data) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir, labels = trained
    fp32 = export_onnx(model_dir, tmp_path / "fp32.onnx", "text-classification")
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx")
    assert int8.stat().st_size < fp32.stat().st_size / 3

    texts = [e.text for e in load_examples(slice_data[1])[0]]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    from edge.inference.intent import IntentConfig

    config = IntentConfig(tuple(labels), 32, 0.0)
    onnx_fp32 = IntentClassifier.from_files(fp32, model_dir / "tokenizer.json", config)
    onnx_int8 = IntentClassifier.from_files(int8, model_dir / "tokenizer.json", config)
    agree = 0
    for text in texts:
        with torch.no_grad():
            inputs = tokenizer(text, truncation=True, max_length=32, return_tensors="pt")
            reference = model(**inputs).logits[0].numpy()
        # the edge tokenizer (tokenizers, no torch) must produce the same ids as transformers
        assert onnx_fp32.encode(text)["input_ids"][0].tolist() == inputs["input_ids"][0].tolist()
        np.testing.assert_allclose(onnx_fp32.logits(text), reference, atol=1e-4, rtol=1e-4)
        agree += int(onnx_int8.logits(text).argmax() == reference.argmax())
    assert agree / len(texts) >= 0.9


def test_published_component_is_complete(intent_build: tuple[Path, dict]) -> None:
    out, report = intent_build
    component = load_component(out)
    assert set(component.fragment["files"]) == {
        "model.onnx",
        "tokenizer.json",
        "intent.json",
        "report.json",
        "report.md",
    }
    assert component.fragment["metrics"]["accuracy_int8"] == report["int8"]["quality"]["accuracy"]
    assert report["fp32"]["latency"]["p50_ms"] > 0 and report["int8"]["batch32_per_second"] > 0
    assert report["int8"]["size_bytes"] < report["fp32"]["size_bytes"] / 3
    assert report["gate"]["passed"] is True
    # a few epochs on six well-separated intents already classify most held-out questions
    assert report["int8"]["quality"]["accuracy"] >= 0.8
    assert 0.0 < report["threshold"]["threshold"] < 1.0
    assert report["data"]["unknown_token_rate"] < 0.001  # English retail text: MiniLM knows it
    config = json.loads((out / "intent.json").read_text())
    assert config["threshold"] == report["threshold"]["threshold"]
    assert "# Intent model report — PUBLISHED" in (out / "report.md").read_text()
    assert not out.with_name(out.name + ".rejected").exists()


def test_edge_loads_the_component_without_torch(intent_build: tuple[Path, dict]) -> None:
    out, _ = intent_build
    script = f"""
import json, sys
from edge.bundle import load_component
from edge.inference.intent import IntentClassifier
classifier = IntentClassifier.from_component(load_component({str(out)!r}), workers=2)
preds = classifier.predict(["I want to cancel my order", "how long does delivery take"])
forbidden = sorted(m for m in ("torch", "transformers", "optimum", "quantize") if m in sys.modules)
print(json.dumps({{"labels": [p.label for p in preds], "forbidden": forbidden}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    answer = json.loads(result.stdout)
    assert answer["forbidden"] == []
    assert answer["labels"] == ["order.cancel_order", "delivery.delivery_period"]
