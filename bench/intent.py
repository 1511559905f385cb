"""The intent path of the default bundle (multilingual INT8 encoder + linear head): FP32 vs INT8, the
trimmed vocabulary, and encoder threads quiet vs under LLM load.

Run: `make bench` or `.venv/bin/python bench/intent.py --bundle models/default`.
Needs the FP32 encoder that `quantize build-default` keeps in `models/default.reference/`.
Prints ratios against the FP32 baseline measured in the same run (machines here are shared and noisy).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.bundle import load_bundle
from edge.inference.embedder import TOKENIZER_FILE, Embedder
from edge.inference.head import HeadClassifier
from edge.inference.loader import load_models
from edge.language import detect
from quantize.data import Example, load_files
from quantize.evaluate import latency

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "models" / "data"
LLM_LOAD = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_threads=int(sys.argv[2]), n_ctx=512, verbose=False)
print("ready", flush=True)
while True:
    llm("Tell me about refunds and deliveries in a store.", max_tokens=64)
"""


def single_latencies(classifier: HeadClassifier, texts: Sequence[str]) -> np.ndarray:
    out = []
    for text in texts:
        started = time.perf_counter()
        classifier.understand(text)
        out.append((time.perf_counter() - started) * 1000.0)
    return np.asarray(out)


def accuracy(classifier: HeadClassifier, examples: Sequence[Example], language: str) -> float:
    rows = [e for e in examples if detect(e.text) == language and e.label != "oos"]
    predicted = classifier.predict([e.text for e in rows])
    return float(np.mean([p.label == e.label for p, e in zip(predicted, rows, strict=True)]))


def with_llm_load(gguf: Path, threads: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", LLM_LOAD, str(gguf), str(threads)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    process.stdout.readline()  # wait until the model is loaded and generating
    time.sleep(0.5)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--queries", type=int, default=300, help="held-out queries timed per configuration")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    fp32_path = args.bundle.with_name(args.bundle.name + ".reference") / "embedder-fp32.onnx"
    if not fp32_path.exists():
        sys.exit(f"{fp32_path} is missing: rebuild with `quantize build-default --out {args.bundle}`")
    models = load_models(bundle)
    int8 = models.classifier
    if not isinstance(int8, HeadClassifier) or models.embedder is None:
        sys.exit("this bench measures a bundle whose intent is a head over its embedder (quantize build-default)")
    embedder = bundle.component("embedder")
    fp32_embedder = Embedder.from_files(fp32_path, embedder.file(TOKENIZER_FILE), models.embedder.config)
    fp32 = HeadClassifier(fp32_embedder, int8._weight, int8._bias, int8.config)
    examples, _ = load_files([DATA / "bitext_retail" / "dev.csv", DATA / "answers" / "dev.csv"])
    texts = [e.text for e in examples]
    rng = np.random.default_rng(13)
    timed = [texts[i] for i in rng.choice(len(texts), size=min(args.queries, len(texts)), replace=False)]

    rows = []
    for name, classifier, path in (("FP32 ONNX", fp32, fp32_path), ("INT8 ONNX", int8, embedder.file("model.onnx"))):
        single_latencies(classifier, timed[:30])  # warm-up
        lat = latency(single_latencies(classifier, timed))
        rows.append(
            (
                name,
                lat["p50_ms"],
                lat["p99_ms"],
                path.stat().st_size / 1e6,
                accuracy(classifier, examples, "en"),
                accuracy(classifier, examples, "zh"),
            )
        )
    print(f"\nEncoder + intent head, {len(timed)} held-out questions (English and Chinese), batch 1, one thread")
    print(f"{'model':<11} {'p50 ms':>7} {'p99 ms':>7} {'MB':>6} {'en top-1':>9} {'zh top-1':>9}")
    for name, p50, p99, size, en, zh in rows:
        print(f"{name:<11} {p50:7.2f} {p99:7.2f} {size:6.1f} {en:9.2%} {zh:9.2%}")
    (_, f50, _, fsize, fen, fzh), (_, i50, _, isize, ien, izh) = rows
    print(
        f"{'INT8/FP32':<11} {f50 / i50:6.2f}× {'':>7} {isize / fsize:5.2f}× {(ien - fen) * 100:+8.2f}pt "
        f"{(izh - fzh) * 100:+8.2f}pt"
    )
    trim = embedder.fragment.get("source", {})
    print(f"(vocabulary trimmed to Latin + CJK; see the embedder's source record: {trim.get('name', '?')})")

    gguf = bundle.component("llm").file("model.gguf")
    print("\nINT8 encoder + head, batch-1 latency by intra-op threads, quiet and with the LLM generating beside it")
    print(f"{'machine state':<26} {'1 thread p50':>13} {'2 threads p50':>14} {'2 workers×1 thr q/s':>20}")
    loads = [("quiet", None), ("LLM generating, 1 thread", 1), ("LLM generating, 2 threads", 2)]
    for label, llm_threads in loads:
        process = with_llm_load(gguf, llm_threads) if llm_threads else None
        try:
            measured = []
            for threads in (1, 2):
                classifier = load_models(bundle, intent_threads=threads).classifier
                measured.append(latency(single_latencies(classifier, timed[:150]))["p50_ms"])
            pool = load_models(bundle, workers=2).classifier
            started = time.perf_counter()
            pool.predict(timed)
            rate = len(timed) / (time.perf_counter() - started)
            pool.close()
        finally:
            if process:
                process.kill()
                process.wait()
        print(f"{label:<26} {measured[0]:12.2f}  {measured[1]:13.2f}  {rate:19.0f}")


if __name__ == "__main__":
    main()
