"""The answer-quality bench's question file is well-formed, and its scoring does what the README says."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def load_bench() -> ModuleType:
    """bench/ is no package: load bench/answers.py by path (registered first, as dataclasses need)."""
    name = "bench_answers_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "answers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench()
CASES = bench.load_cases(bench.CASES)
INTENTS = set(bench.intent_labels())
FAQ = bench.faq_questions()
LABEL_MAP = bench.load_label_map(bench.LABELS)
TURNS = [(case, turn) for case in CASES for turn in case.turns]


def normalised(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_ids_are_unique_and_name_their_language() -> None:
    ids = Counter(case.id for case in CASES)
    assert [i for i, n in ids.items() if n > 1] == []
    assert all(case.id.startswith(f"{case.language}-") for case in CASES)


def test_languages_are_balanced() -> None:
    per_language = Counter(case.language for case in CASES)
    assert per_language["en"] >= 150 and per_language["zh"] >= 150
    assert abs(per_language["en"] - per_language["zh"]) <= 0.1 * max(per_language.values())


@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_kind_is_present(language: str) -> None:
    kinds = Counter(case.kind for case in CASES if case.language == language)
    assert set(kinds) == set(bench.KINDS)


def test_every_expectation_is_known() -> None:
    known = INTENTS | {bench.HANDOFF} | {bench.FAQ_PREFIX + question for question in FAQ}
    unknown = [(case.id, e) for case, turn in TURNS for e in turn.expectations if e not in known]
    assert unknown == []


def test_labels_file_maps_exactly_the_store_faq() -> None:
    assert sorted(LABEL_MAP) == sorted(bench.FAQ_PREFIX + question for question in FAQ)
    assert all(label and label != bench.HANDOFF for label in LABEL_MAP.values())


def test_every_expectation_resolves() -> None:
    for _, turn in TURNS:
        accepted = bench.accepted_labels(turn, LABEL_MAP)
        assert accepted and (bench.HANDOFF not in accepted or accepted == {bench.HANDOFF})


def test_kinds_match_their_turns() -> None:
    for case in CASES:
        first = case.turns[0].expect
        if case.kind == "followup":
            assert 2 <= len(case.turns) <= 3, case.id
        else:
            assert len(case.turns) == 1, case.id
        if case.kind == "faq":
            assert first.startswith(bench.FAQ_PREFIX), case.id
        elif case.kind == "intent":
            assert first in INTENTS, case.id
        elif case.kind in ("near_domain", "off_topic"):
            assert [t.expectations for t in case.turns] == [(bench.HANDOFF,)], case.id
        else:
            assert all(t.expect != bench.HANDOFF for t in case.turns), case.id


def test_chinese_queries_are_chinese() -> None:
    for case, turn in TURNS:
        if case.language == "zh":
            assert bench.CJK.search(turn.query), case.id
        else:
            assert not bench.CJK.search(turn.query), case.id


def test_no_query_duplicates_another() -> None:
    seen = Counter(normalised(turn.query) for _, turn in TURNS)
    assert [q for q, n in seen.items() if n > 1] == []


def test_english_queries_are_not_copies_of_the_faq() -> None:
    """Paraphrases, not the FAQ questions with a word changed: no two-thirds word overlap."""
    faq_words = [(question, words(question)) for question in FAQ]
    close = []
    for case, turn in TURNS:
        if case.language != "en":
            continue
        mine = words(turn.query)
        for question, theirs in faq_words:
            if len(mine & theirs) / len(mine | theirs) >= 2 / 3:
                close.append((case.id, turn.query, question))
    assert close == []


# --- scoring ---------------------------------------------------------------------------------------

Outcome = bench.Outcome


@pytest.mark.parametrize(
    ("accepted", "route", "label", "outcome"),
    [
        ({"store.parking"}, "curated", "store.parking", Outcome.CORRECT),
        ({"store.parking"}, "cache", "store.parking", Outcome.CORRECT),
        ({"store.parking", "store.opening_hours"}, "llm", "store.opening_hours", Outcome.CORRECT),
        ({"store.parking"}, "curated", "order.track_order", Outcome.WRONG),
        ({"store.parking"}, "llm", None, Outcome.WRONG),  # an LLM answer grounded on nothing
        ({"store.parking"}, "handoff", None, Outcome.MISSED),
        ({"store.parking"}, "declined", None, Outcome.MISSED),
        ({"handoff"}, "handoff", None, Outcome.HANDED_OFF),
        ({"handoff"}, "declined", None, Outcome.HANDED_OFF),
        ({"handoff"}, "curated", "store.parking", Outcome.WRONG),
        ({"handoff"}, "llm", "handoff", Outcome.WRONG),  # answering at all is wrong, whatever the label
        ({"store.parking"}, None, None, Outcome.ERROR),
        ({"store.parking"}, "streamed", "store.parking", Outcome.ERROR),  # a route outside the contract
    ],
)
def test_score(accepted: set[str], route: str | None, label: str | None, outcome: object) -> None:
    assert bench.score(frozenset(accepted), route, label) is outcome


def test_answered_label_follows_the_route() -> None:
    sources = '[{"document_name": "store.parking", "score": 0.8}, {"document_name": "store.toilets"}]'
    assert bench.answered_label("curated", "refund.get_refund", None) == "refund.get_refund"
    assert bench.answered_label("cache", "refund.get_refund", "[]") == "refund.get_refund"
    assert bench.answered_label("llm", "refund.get_refund", sources) == "store.parking"
    assert bench.answered_label("llm", None, "[]") is None
    assert bench.answered_label("llm", None, None) is None
    assert bench.answered_label("llm", None, "not json") is None
    assert bench.answered_label("handoff", "refund.get_refund", sources) is None


def test_a_merged_label_accepts_either_expectation() -> None:
    """The lead may fold a store FAQ entry into an intent: the mapping file alone changes."""
    merged = {**LABEL_MAP, "faq:Which payment methods do you accept?": "payment.check_payment_methods"}
    turn = bench.Turn("do you take cash?", "faq:Which payment methods do you accept?")
    assert bench.accepted_labels(turn, merged) == {"payment.check_payment_methods"}
    assert bench.score(bench.accepted_labels(turn, merged), "curated", "payment.check_payment_methods") is (
        Outcome.CORRECT
    )
    with pytest.raises(ValueError, match="labels file"):
        bench.resolve("faq:Do you sell ice cream?", LABEL_MAP)


@pytest.mark.parametrize(
    ("text", "chinese"),
    [
        ("您可以在收银台购买礼品卡，永不过期。", True),
        ("请发邮件到 support@example.com 联系我们的客服团队。", True),
        ("点击首页上的 'Sign Up' 按钮即可注册。", True),
        ("Gift cards are sold at every till.", False),
        ("Welcome to 华联 — gift cards are sold at every till and never expire.", False),
        ("", False),
    ],
)
def test_is_chinese(text: str, chinese: bool) -> None:
    assert bench.is_chinese(text) is chinese


def test_load_cases_names_a_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text('{"id": "en-001", "language": "en", "kind": "faq", "turns": [{"query": "hi"}]}\n')
    with pytest.raises(ValueError, match=r"cases\.jsonl:1"):
        bench.load_cases(path)
