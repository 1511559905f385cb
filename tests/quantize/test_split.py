from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantize.data import DataError, Example
from quantize.split import remove_overlap, stratified_split


def examples(counts: dict[str, int]) -> list[Example]:
    return [Example(f"{label} text {i}", label) for label, n in counts.items() for i in range(n)]


def test_every_label_on_both_sides_in_proportion() -> None:
    data = examples({"a.x": 100, "b.y": 30, "c.z": 2})
    train, held = stratified_split(data, 0.1, seed=1)
    held_counts = Counter(e.label for e in held)
    assert held_counts == {"a.x": 10, "b.y": 3, "c.z": 1}
    assert Counter(e.label for e in train) == {"a.x": 90, "b.y": 27, "c.z": 1}


def test_split_is_fixed_by_seed_and_order_free() -> None:
    data = examples({"a": 50, "b": 50})
    first = stratified_split(data, 0.2, seed=7)
    again = stratified_split(list(reversed(data)), 0.2, seed=7)
    other = stratified_split(data, 0.2, seed=8)
    assert sorted(first[1], key=str) == sorted(again[1], key=str)
    assert set(first[1]) != set(other[1])


@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 40), min_size=1), st.floats(0.05, 0.5))
def test_split_is_a_partition(counts: dict[str, int], fraction: float) -> None:
    data = examples(counts)
    train, held = stratified_split(data, fraction, seed=0)
    assert sorted(train + held, key=str) == sorted(data, key=str)
    assert not set(train) & set(held)
    assert {e.label for e in train} == set(counts)


def test_bad_fraction() -> None:
    with pytest.raises(DataError):
        stratified_split(examples({"a": 3}), 1.5, seed=0)


def test_overlap_with_training_is_removed() -> None:
    train = [Example("same", "a"), Example("other", "b")]
    held, removed = remove_overlap(train, [Example("same", "a"), Example("new", "b")])
    assert held == [Example("new", "b")] and removed == 1
