"""Export a Hugging Face encoder to ONNX with optimum, then quantize it to INT8 with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class ExportError(Exception):
    """optimum or onnxruntime could not produce a valid model."""


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs one INFO line per tensor on the root logger; keep it out."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def export_onnx(model_dir: Path, out_file: Path, task: str) -> Path:
    """Export `model_dir` for `task` (`text-classification` or `feature-extraction`) to one file.

    optimum validates the ONNX outputs against the PyTorch model as part of the export.
    """
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch tracer warnings about constant masks
                main_export(
                    str(model_dir),
                    output=tmp,
                    task=task,
                    library_name="transformers",
                    local_files_only=True,
                    do_validation=True,
                )
        except Exception as exc:  # optimum raises many types; all mean "no usable export"
            raise ExportError(f"ONNX export of {model_dir} failed: {exc}") from exc
        log.debug("optimum: %s", chatter.getvalue())
        out_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "model.onnx"), out_file)
    return out_file


def quantize_int8(fp32_file: Path, int8_file: Path) -> Path:
    """Dynamic INT8 with per-channel weights.

    Per-channel keeps noticeably more fidelity than per-tensor at the same speed. Activations are
    quantized at run time over the whole input tensor, which is why the runtime runs queries at
    batch 1 (see `edge.inference.intent`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_root_logger():
            quantize_dynamic(str(fp32_file), str(int8_file), per_channel=True, weight_type=QuantType.QInt8)
    except Exception as exc:  # onnxruntime.quantization raises bare exceptions
        raise ExportError(f"INT8 quantization of {fp32_file} failed: {exc}") from exc
    return int8_file


def quantization_record() -> dict[str, object]:
    import onnxruntime

    return {
        "method": "dynamic",
        "weights": "int8 per-channel",
        "activations": "uint8, per-tensor, computed at run time",
        "tool": f"onnxruntime {onnxruntime.__version__}",
    }
