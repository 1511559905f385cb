"""Fine-tune a local sentence encoder for intent classification (torch; build side only)."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from quantize.data import Example

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 8.0
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    batch_size: int = 32
    max_length: int = 64
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 13
    threads: int = 2
    max_steps: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingStats:
    steps: int
    seconds: float
    examples_per_second: float
    final_loss: float


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length, so dynamic padding wastes little compute.

    Indices are shuffled, cut into pools of 50 batches, sorted by length inside a pool, cut into
    batches, and the batches shuffled again: the order stays random, the padding small.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def train_classifier(
    base_model: Path,
    examples: list[Example],
    labels: list[str],
    config: TrainConfig,
    out_dir: Path,
    *,
    progress: bool = True,
) -> TrainingStats:
    """Fine-tune `base_model` on `examples` and save model + tokenizer to `out_dir`."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)

    label_ids = {label: index for index, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_ids,
        local_files_only=True,
    )
    encoded = tokenizer([e.text for e in examples], truncation=True, max_length=config.max_length)
    input_ids: list[list[int]] = encoded["input_ids"]
    targets = [label_ids[e.label] for e in examples]

    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup = int(total_steps * config.warmup_ratio)

    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body_decay = [p for n, p in model.named_parameters() if not n.startswith("classifier") and not _no_decay(n)]
    body_no_decay = [p for n, p in model.named_parameters() if not n.startswith("classifier") and _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": body_decay, "weight_decay": config.weight_decay, "lr": config.learning_rate},
            {"params": body_no_decay, "weight_decay": 0.0, "lr": config.learning_rate},
            {"params": head, "weight_decay": config.weight_decay, "lr": config.head_learning_rate},
        ]
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    pad_id = tokenizer.pad_token_id or 0
    lengths = [len(ids) for ids in input_ids]

    model.train()
    step = 0
    seen = 0
    loss_value = float("nan")
    started = time.perf_counter()
    bar = tqdm(total=total_steps, desc="fine-tuning", unit="step", disable=not progress)
    while step < total_steps:
        for batch in _batches(lengths, config.batch_size, rng):
            if step >= total_steps:
                break
            width = max(lengths[i] for i in batch)
            ids = torch.tensor([input_ids[i] + [pad_id] * (width - lengths[i]) for i in batch])
            mask = torch.tensor([[1] * lengths[i] + [0] * (width - lengths[i]) for i in batch])
            output = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([targets[i] for i in batch]))
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(output.loss.detach())
            step += 1
            seen += len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", epoch=f"{step / steps_per_epoch:.2f}")
    bar.close()
    seconds = time.perf_counter() - started
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    stats = TrainingStats(step, seconds, seen / max(seconds, 1e-9), loss_value)
    log.info("trained %d steps in %.1fs (%.0f examples/s)", step, seconds, stats.examples_per_second)
    return stats


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name
