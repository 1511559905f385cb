"""LLM quantization table for the default model (SmolLM2-135M-Instruct): every variant, measured in one run.

Run: `.venv/bin/python bench/llm_quant.py` (the machine otherwise idle: llama.cpp at 2 threads on
2 cores is very sensitive to any other load). Prints size, load time, RSS, prompt and generation
tok/s at 1 and 2 threads (median and spread of --repeats runs), perplexity on held-out retail
answers, and KL / top-1 agreement against the F16 reference, then the recommendation.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from quantize.default import RETAIL_DATA, import_packaged_llm, reference_dir
from quantize.llm.pipeline import LlmOptions, build_llm
from quantize.llm.quantize_gguf import DEFAULT_TYPES
from quantize.llm.recommend import Budget

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES))
    parser.add_argument("--max-mb", type=float, default=160)
    parser.add_argument("--min-tok-s", type=float, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    checkpoint = import_packaged_llm(reference_dir(ROOT / "models" / "default"))
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        out = Path(tmp) / "llm"
        build_llm(
            LlmOptions(
                checkpoint=checkpoint,
                out=out,
                eval_text=RETAIL_DATA / "intent_responses.csv",
                types=tuple(args.types.split(",")),
                threads=(1, 2),
                repeats=args.repeats,
                budget=Budget(max_mb=args.max_mb, min_tok_s=args.min_tok_s, threads=1),
                include_f32=False,
            )
        )
        print((out / "report.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
