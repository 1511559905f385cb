"""Measure one GGUF variant: size, load time, RSS, prompt and generation speed, perplexity, fidelity.

Each variant is measured in a fresh child process (`python -m quantize.llm.measure`), so its RSS
is its own and one variant's caches never flatter the next. Fidelity compares next-token
distributions with the reference (F16) over the same held-out tokens: mean KL divergence and
top-1 agreement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHAT_PROBE = [{"role": "user", "content": "Hello! Can I return a jacket I bought last week?"}]


@dataclass(frozen=True)
class MeasureSpec:
    gguf: str
    eval_text: str
    threads: list[int] = field(default_factory=lambda: [1, 2])
    repeats: int = 3
    context: int = 512
    max_eval_tokens: int = 1024
    prompt_tokens: int = 128
    gen_tokens: int = 64
    reference_logprobs: str | None = None
    save_logprobs: str | None = None


class MeasureError(Exception):
    """A variant could not be loaded or measured."""


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """llama.cpp logs to file descriptor 2 from C; keep the parent's output readable."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _quality(spec: MeasureSpec) -> dict[str, Any]:
    from llama_cpp import Llama

    started = time.perf_counter()
    with _quiet_fd2():
        llm = Llama(
            model_path=spec.gguf,
            n_ctx=spec.context,
            n_batch=spec.context,
            n_threads=spec.threads[-1],
            logits_all=True,
            verbose=False,
        )
    load_seconds = time.perf_counter() - started
    tokens = llm.tokenize(spec.eval_text.encode("utf-8"), add_bos=False, special=False)[: spec.max_eval_tokens]
    if len(tokens) < 16:
        raise MeasureError("the held-out text is too short to measure perplexity (fewer than 16 tokens)")
    rows: list[np.ndarray] = []
    nll = 0.0
    count = 0
    for start in range(0, len(tokens) - 1, spec.context):
        chunk = tokens[start : start + spec.context]
        if len(chunk) < 2:
            break
        llm.reset()
        llm.eval(chunk)
        logprobs = _log_softmax(np.asarray(llm.scores[: len(chunk)], dtype=np.float64))[:-1]
        nll -= float(logprobs[np.arange(len(chunk) - 1), chunk[1:]].sum())
        count += len(chunk) - 1
        rows.append(logprobs.astype(np.float32))
    logprobs_all = np.concatenate(rows)
    result: dict[str, Any] = {
        "load_seconds": load_seconds,
        "eval_tokens": count,
        "perplexity": float(np.exp(nll / count)),
    }
    if spec.save_logprobs:
        np.save(spec.save_logprobs, logprobs_all)
    if spec.reference_logprobs:
        reference = np.load(spec.reference_logprobs, mmap_mode="r")
        if reference.shape != logprobs_all.shape:
            raise MeasureError(f"reference has shape {reference.shape}, this variant {logprobs_all.shape}")
        kl = []
        for start in range(0, len(reference), 256):  # in slices: the full matrices are large
            ref = np.asarray(reference[start : start + 256], dtype=np.float64)
            ours = logprobs_all[start : start + 256].astype(np.float64)
            kl.append((np.exp(ref) * (ref - ours)).sum(axis=1))
        result["kl_mean"] = float(np.concatenate(kl).mean())
        result["top1_agreement"] = float((reference.argmax(axis=1) == logprobs_all.argmax(axis=1)).mean())
    result["chat_answer"] = _chat_probe(llm)
    return result


def _chat_probe(llm: Any) -> str:
    """A short greedy answer through the GGUF's own chat template."""
    llm.reset()
    reply = llm.create_chat_completion(messages=CHAT_PROBE, max_tokens=24, temperature=0.0)
    return str(reply["choices"][0]["message"]["content"] or "")


def _speed(spec: MeasureSpec, tokens: list[int]) -> dict[str, Any]:
    from llama_cpp import Llama

    prompt = tokens[: spec.prompt_tokens]
    figures: dict[str, Any] = {}
    for threads in spec.threads:
        with _quiet_fd2():
            llm = Llama(
                model_path=spec.gguf, n_ctx=spec.context, n_batch=spec.context, n_threads=threads, verbose=False
            )
        loaded_rss = _rss_mb()
        prompt_rates, gen_rates = [], []
        for _ in range(spec.repeats + 1):  # the first round warms caches and is discarded
            llm.reset()
            started = time.perf_counter()
            first = None
            for index, _token in enumerate(llm.generate(prompt, top_k=1, temp=0.0, reset=True)):
                if index == 0:
                    first = time.perf_counter()
                if index + 1 >= spec.gen_tokens:
                    break
            finished = time.perf_counter()
            assert first is not None
            prompt_rates.append(len(prompt) / (first - started))
            gen_rates.append((spec.gen_tokens - 1) / (finished - first))
        prompt_rates, gen_rates = prompt_rates[1:], gen_rates[1:]
        figures[str(threads)] = {
            "prompt_tok_s": statistics.median(prompt_rates),
            "gen_tok_s": statistics.median(gen_rates),
            "gen_tok_s_min": min(gen_rates),
            "gen_tok_s_max": max(gen_rates),
            "rss_mb": max(loaded_rss, _rss_mb()),  # serving settings: no all-token logits buffer
        }
        del llm
    return figures


def measure_in_process(spec: MeasureSpec) -> dict[str, Any]:
    """Speed (and serving RSS) first, in a fresh process; then perplexity and fidelity."""
    from llama_cpp import Llama

    with _quiet_fd2():
        vocab_only = Llama(model_path=spec.gguf, vocab_only=True, verbose=False)
    tokens = vocab_only.tokenize(spec.eval_text.encode("utf-8"), add_bos=False, special=False)
    del vocab_only
    speed = _speed(spec, tokens)
    rss = max(figures["rss_mb"] for figures in speed.values())
    quality = _quality(spec)
    return {"size_bytes": Path(spec.gguf).stat().st_size, **quality, "rss_mb": rss, "speed": speed}


def measure_variant(spec: MeasureSpec, *, timeout: float = 900.0) -> dict[str, Any]:
    """Run `measure_in_process` in a child process and return its figures."""
    command = [sys.executable, "-m", "quantize.llm.measure", json.dumps(asdict(spec))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MeasureError(f"measuring {spec.gguf} took longer than {timeout:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise MeasureError(f"measuring {spec.gguf} failed: {' | '.join(tail)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure one GGUF variant (internal worker).")
    parser.add_argument("spec", help="MeasureSpec as JSON")
    spec = MeasureSpec(**json.loads(parser.parse_args().spec))
    try:
        print(json.dumps(measure_in_process(spec)))
    except MeasureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
