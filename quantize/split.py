"""Hold out evaluation data: a given file, or a stratified split with a fixed seed."""

from __future__ import annotations

import random
from collections import defaultdict

from quantize.data import DataError, Example


def stratified_split(
    examples: list[Example], held_out_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Split per label so every label keeps the same share in both parts.

    Each label with two or more examples gives at least one to each side; the result depends only
    on the examples (as a set), the fraction and the seed.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise DataError(f"the held-out fraction must be between 0 and 1, got {held_out_fraction}")
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    rng = random.Random(seed)
    train: list[Example] = []
    held_out: list[Example] = []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda e: e.text)
        rng.shuffle(group)
        if len(group) < 2:
            train.extend(group)
            continue
        count = min(max(1, round(len(group) * held_out_fraction)), len(group) - 1)
        held_out.extend(group[:count])
        train.extend(group[count:])
    return train, held_out


def remove_overlap(train: list[Example], held_out: list[Example]) -> tuple[list[Example], int]:
    """Drop held-out rows whose text is also in training: they would flatter the accuracy."""
    train_texts = {example.text for example in train}
    kept = [example for example in held_out if example.text not in train_texts]
    return kept, len(held_out) - len(kept)
