"""Build onnxruntime sessions and tokenizers the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
from tokenizers import Tokenizer

from edge.bundle import BundleError


def make_session(model_path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with a fixed thread count, so latency does not depend on the host's size."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
        raise BundleError(f"{model_path} is not a loadable ONNX model: {exc}") from exc


def load_tokenizer(tokenizer_path: Path, max_length: int) -> Tokenizer:
    """A `tokenizers` tokenizer that truncates to `max_length` and never pads (batch-1 runs)."""
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise BundleError(f"{tokenizer_path} is not a readable tokenizer: {exc}") from exc
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer
