"""The intent path of the default bundle (multilingual INT8 encoder + linear head): FP32 vs INT8, the
trimmed vocabulary, encoder threads quiet vs under LLM load, and where the encoder's time goes (batch
size, graph fusion before quantization, tokens per question, the CPU's INT8 instructions): the
figures behind the verbatim route's throughput.

Run: `make bench` or `.venv/bin/python bench/intent.py --bundle models/default`.
Needs the FP32 encoder that `quantize build-default` keeps in `models/default.reference/`.
Prints ratios against the FP32 baseline measured in the same run (machines here are shared and noisy).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
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


def batch_ms_per_query(embedder: Embedder, texts: Sequence[str], batch: int) -> float:
    """Encoder time per question when `batch` questions share one run (padded to the longest)."""
    embedder.embed(texts[:20])
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        embedder._embed_batch(texts[start : start + batch])
    return (time.perf_counter() - started) * 1000.0 / len(texts)


def fused_int8(fp32_path: Path, out: Path, heads: int, hidden: int) -> Path:
    """onnxruntime's transformer fusions (Attention, SkipLayerNorm, BiasGelu) applied before INT8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger().setLevel(logging.ERROR)
    fused = out.with_name("fused-fp32.onnx")
    optimize_model(str(fp32_path), model_type="bert", num_heads=heads, hidden_size=hidden).save_model_to_file(
        str(fused)
    )
    quantize_dynamic(
        str(fused), str(out), per_channel=True, weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1}
    )
    return out


def int8_dot_instructions() -> str:
    """x86 INT8 GEMM is several times faster with VNNI (or AMX) than with AVX2's multiply-add pairs."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    found = [name for name in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2") if f" {name}" in flags]
    return ", ".join(found) or "none of avx2/avx512/vnni/amx"


def encoder_time_table(embedder: Embedder, fp32_path: Path, tokenizer: Path, texts: Sequence[str]) -> None:
    prefix = embedder.config.prefix
    tokens = [len(embedder._tokenizer.encode(prefix + text).ids) for text in texts]
    bare = [len(embedder._tokenizer.encode(text).ids) for text in texts]
    print("\nWhere the encoder's time goes (INT8, one thread)")
    print(f"- CPU INT8 instructions: {int8_dot_instructions()}")
    print(
        f"- tokens a question: {np.mean(tokens):.1f} with the prefix {prefix!r}, {np.mean(bare):.1f} without "
        "(encoder time is about linear in tokens at this length)"
    )
    base = batch_ms_per_query(embedder, texts, 1)
    print(f"{'configuration':<44} {'ms/question':>12} {'÷ batch 1':>10}")
    print(f"{'bundle INT8, batch 1 (what the box runs)':<44} {base:12.2f} {1.0:10.2f}")
    for batch in (4, 8):
        ms = batch_ms_per_query(embedder, texts, batch)
        print(f"{f'bundle INT8, batch {batch}':<44} {ms:12.2f} {ms / base:10.2f}")
    with tempfile.TemporaryDirectory(prefix="fused-") as tmp:
        try:
            path = fused_int8(fp32_path, Path(tmp) / "fused-int8.onnx", heads=12, hidden=embedder.config.dimension)
            fused = Embedder.from_files(path, tokenizer, embedder.config)
            ms = batch_ms_per_query(fused, texts, 1)
            print(f"{'fused graph before INT8, batch 1':<44} {ms:12.2f} {ms / base:10.2f}")
        except Exception as exc:  # the optimizer's fusions are model-specific; report, do not fail the bench
            print(f"fused graph before INT8: not measured ({exc})")
    budget = 2 * 1000.0 / 300
    print(
        f"- 300 req/s on 2 cores leaves {budget:.2f} ms of CPU a request for everything "
        f"(encoder {base:.2f} ms here, batch 1)"
    )


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
    encoder_time_table(models.embedder, fp32_path, embedder.file(TOKENIZER_FILE), timed)

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
