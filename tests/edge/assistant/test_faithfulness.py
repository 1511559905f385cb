"""A generated sentence may only state numbers and names its evidence holds (the issue's own examples)."""

import pytest

from edge.assistant.faithfulness import Evidence, sentences
from edge.assistant.pipeline import split_sentence

EVIDENCE = Evidence(
    [
        "Customers park free for two hours in the car park behind our store.",
        "our store is open from 9:00 to 20:00, every day except public holidays.",
        "Yes, connect to the network named after our store; no password is needed.",
        "Gift cards from 10 to 500 are sold at every till. They never expire.",
    ]
)


@pytest.mark.parametrize(
    ("text", "unsupported"),
    [
        ("We close at 10:00pm.", {"10:00pm"}),
        ("We close at 10pm tonight.", {"10pm"}),
        ('The password is "Wi-Fi 6".', {"Wi-Fi", "6"}),
        ("Yes, we accept Apple Pay and Apple Pay Cash.", {"Apple", "Pay", "Cash"}),
        ("Gift cards cost up to 1000.", {"1000"}),
        ("You get 15% off today.", {"15"}),
        ("Parking is free for three hours.", {"three"}),
        ("Gift cards from 10:00 work.", {"10:00"}),  # "10" is a price in the evidence, not a time
    ],
)
def test_invented_facts_are_caught(text: str, unsupported: set[str]) -> None:
    verdict = EVIDENCE.check(text)
    assert not verdict.faithful and set(verdict.unsupported) == unsupported


@pytest.mark.parametrize(
    "text",
    [
        "You can park free for 2 hours behind the store.",
        "Parking is free for two hours.",
        "We close at 8pm.",  # 20:00 in the evidence
        "Gift cards go from 10 to 500 and never expire.",
        "Yes! No password is needed.",
    ],
)
def test_facts_in_the_evidence_pass(text: str) -> None:
    assert EVIDENCE.check(text).faithful, EVIDENCE.check(text)


def test_sentences_are_split_where_a_sentence_ends() -> None:
    assert sentences("One. Two! Three?\nFour") == ["One.", "Two!", "Three?", "Four"]
    assert split_sentence("It is 10.") is None  # "10." may go on as "10.5": wait for more text
    assert split_sentence("Yes. And") == ("Yes. ", "And")
    assert split_sentence("No sentence yet") is None
