"""Quantize an F16 GGUF with llama.cpp's own quantizer (through llama-cpp-python), no external binary."""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from pathlib import Path

from quantize.llm.architectures import UnsupportedModel

# Names as llama.cpp's `llama-quantize` spells them → llama_ftype values.
QUANT_TYPES: dict[str, str] = {
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q5_K_S": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q4_K_S": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K",
}
DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")


class QuantizeError(Exception):
    """llama.cpp refused or failed to quantize."""


def check_types(types: list[str]) -> list[str]:
    unknown = [t for t in types if t.upper() not in QUANT_TYPES]
    if unknown:
        raise UnsupportedModel(f"unknown quant type(s) {', '.join(unknown)}; known: {', '.join(QUANT_TYPES)}")
    return [t.upper() for t in types]


def quantize_gguf(source: Path, out_file: Path, quant_type: str, *, threads: int = 2) -> Path:
    """Write `out_file` via a temporary name; nothing is left behind on failure."""
    import llama_cpp

    (quant_type,) = check_types([quant_type])
    if not Path(source).is_file():
        raise QuantizeError(f"{source} does not exist")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant_type])
    params.nthread = threads
    tmp = out_file.with_name(f".{out_file.name}.partial")
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    if status != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise QuantizeError(f"llama.cpp could not quantize {source} to {quant_type} (status {status})")
    os.replace(tmp, out_file)
    return out_file


def tensor_census(gguf_file: Path) -> dict[str, int]:
    """How many weight tensors ended up in each ggml type (shows k-quant fallbacks)."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_file)
    return dict(Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) > 1))
