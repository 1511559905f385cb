"""Intent model speed and quality: FP32 vs INT8 ONNX, and intent threads quiet vs under LLM load.

Run: `make bench` or `.venv/bin/python bench/intent.py --bundle models/default`.
Needs the FP32 baseline that `quantize build-default` keeps in `models/default.reference/`.
Prints ratios against the FP32 baseline measured in the same run (machines here are shared and noisy).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge.bundle import load_bundle
from edge.inference.intent import CONFIG_FILE, TOKENIZER_FILE, IntentClassifier, IntentConfig
from quantize.data import load_examples
from quantize.evaluate import batch_throughput, latency, quality, score

ROOT = Path(__file__).resolve().parent.parent
LLM_LOAD = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_threads=int(sys.argv[2]), n_ctx=512, verbose=False)
print("ready", flush=True)
while True:
    llm("Tell me about refunds and deliveries in a store.", max_tokens=64)
"""


def single_latencies(classifier: IntentClassifier, texts: list[str]) -> np.ndarray:
    out = []
    for text in texts:
        started = time.perf_counter()
        classifier.logits(text)
        out.append((time.perf_counter() - started) * 1000.0)
    return np.asarray(out)


def concurrent_rate(classifier: IntentClassifier, texts: list[str]) -> float:
    started = time.perf_counter()
    classifier.predict(texts)
    return len(texts) / (time.perf_counter() - started)


def with_llm_load(gguf: Path, threads: int):
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
    parser.add_argument("--data", type=Path, default=ROOT / "models" / "data" / "bitext_retail" / "dev.csv")
    parser.add_argument("--queries", type=int, default=400, help="held-out queries timed per configuration")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    component = bundle.component("intent")
    fp32_path = args.bundle.with_name(args.bundle.name + ".reference") / "intent-fp32.onnx"
    if not fp32_path.exists():
        sys.exit(f"{fp32_path} is missing: rebuild with `quantize build-default --out {args.bundle}`")
    config = IntentConfig.from_dict(component.config(CONFIG_FILE))
    tokenizer = component.file(TOKENIZER_FILE)
    examples = load_examples(args.data)[0]
    texts = [e.text for e in examples][: args.queries]
    gold = [e.label for e in examples]

    rows = []
    for name, model in (("FP32 ONNX", fp32_path), ("INT8 ONNX", component.file("model.onnx"))):
        classifier = IntentClassifier.from_files(model, tokenizer, config, threads=1)
        single_latencies(classifier, texts[:50])  # warm-up
        lat = latency(single_latencies(classifier, texts))
        acc = quality(gold, score(classifier, examples).predicted)["accuracy"]
        rate = batch_throughput(model, tokenizer, config, [e.text for e in examples], threads=2)
        rows.append((name, lat["p50_ms"], lat["p99_ms"], rate, model.stat().st_size / 1e6, acc))

    print(f"\nIntent model, {len(texts)} held-out queries from {args.data.name}, batch 1 on one thread")
    print(f"{'model':<11} {'p50 ms':>7} {'p99 ms':>7} {'b32 q/s':>8} {'MB':>6} {'accuracy':>9}")
    for name, p50, p99, rate, size, acc in rows:
        print(f"{name:<11} {p50:7.2f} {p99:7.2f} {rate:8.0f} {size:6.1f} {acc:9.2%}")
    (_, f50, _, frate, fsize, facc), (_, i50, _, irate, isize, iacc) = rows
    print(
        f"{'INT8/FP32':<11} {f50 / i50:6.2f}× {'':>7} {irate / frate:7.2f}× {isize / fsize:5.2f}× "
        f"{(iacc - facc) * 100:+8.2f} pt"
    )

    gguf = bundle.component("llm").file("model.gguf")
    print("\nINT8 intent, batch-1 latency by intra-op threads, quiet and with the LLM generating beside it")
    print(f"{'machine state':<26} {'1 thread p50':>13} {'2 threads p50':>14} {'2 workers×1 thr q/s':>20}")
    loads = [("quiet", None), ("LLM generating, 1 thread", 1), ("LLM generating, 2 threads", 2)]
    for label, llm_threads in loads:
        process = with_llm_load(gguf, llm_threads) if llm_threads else None
        try:
            measured = []
            for threads in (1, 2):
                classifier = IntentClassifier.from_files(
                    component.file("model.onnx"), tokenizer, config, threads=threads
                )
                measured.append(latency(single_latencies(classifier, texts[:200]))["p50_ms"])
            pool = IntentClassifier.from_files(component.file("model.onnx"), tokenizer, config, threads=1, workers=2)
            rate = concurrent_rate(pool, texts)
            pool.close()
        finally:
            if process:
                process.kill()
                process.wait()
        print(f"{label:<26} {measured[0]:12.2f}  {measured[1]:13.2f}  {rate:19.0f}")


if __name__ == "__main__":
    main()
