"""Is a generated answer faithful to what grounded it?

A small LLM fluently invents the facts a shopper acts on: a closing time, a price, a percentage, a
password, a brand it "accepts". Every number (digits or number words, times and prices included)
and every proper name in a generated sentence must appear in the evidence: the grounding passages,
the conversation so far and the store's own settings. Anything else sends the box back to a verbatim
answer or a hand-off. The check is lexical on purpose: cheap, explainable, and strict where strictness
is cheap (a false alarm costs a hand-off, a missed invention costs a wrong answer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# 9:00, 21:30, 8pm, 8 p.m., 10:00pm: a clock time, compared as a time and never as a bare number.
_CLOCK = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\b\.?|\b(\d{1,2}):(\d{2})\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")
_WORD_NUMBERS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "ninety": 90, "hundred": 100, "thousand": 1000, "twice": 2, "double": 2, "half": 0.5,
    "once": 1, "single": 1, "zero": 0,
}  # fmt: skip
# Capitalised words that are not names wherever they stand in a sentence.
_NOT_NAMES = frozenset(
    [
        "i",
        "i'm",
        "i'll",
        "i'd",
        "i've",
        "ok",
        "okay",
        "hi",
        "hello",
        "sorry",
        "please",
        "thank",
        "thanks",
        "yes",
        "no",
        "mr",
        "mrs",
        "ms",
        "dr",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "english",
        "chinese",
    ]
)


@dataclass(frozen=True)
class Verdict:
    faithful: bool
    unsupported: tuple[str, ...] = ()  # the facts not found in the evidence, as written


def _times(text: str) -> set[str]:
    """Clock times a text states, as 'H:MM' on the 24-hour clock ('8pm' → '20:00', '9:00' → '9:00')."""
    found: set[str] = set()
    for match in _CLOCK.finditer(text):
        if match.group(4) is not None:
            found.add(f"{int(match.group(4))}:{match.group(5)}")
            continue
        hour = int(match.group(1)) % 12 + (12 if match.group(3).lower() == "p" else 0)
        found.add(f"{hour}:{match.group(2) or '00'}")
    return found


def _numbers(text: str) -> dict[str, str]:
    """Every number a text states outside clock times, digits or words: canonical form → as written."""
    found: dict[str, str] = {}
    for match in _NUMBER.finditer(_CLOCK.sub(" ", text)):
        raw = match.group(0)
        compact = raw.replace(",", "")
        found.setdefault(str(float(compact)) if compact.replace(".", "", 1).isdigit() else compact, raw)
    for word in _WORD.findall(text):
        value = _WORD_NUMBERS.get(word.lower())
        if value is not None:
            found.setdefault(str(float(value)), word)
    return found


def _names(sentence: str) -> list[str]:
    """Proper names: capitalised words past a sentence's first word, and all-capital words anywhere."""
    names = []
    for index, match in enumerate(_WORD.finditer(sentence)):
        word = match.group(0)
        lowered = word.lower()
        if lowered in _NOT_NAMES or lowered in _WORD_NUMBERS:
            continue
        if (len(word) > 1 and word.isupper()) or (index > 0 and word[0].isupper()):
            names.append(word)
    return names


def sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(text) if part.strip()]


class Evidence:
    """What a generated answer may state: its grounding, the conversation and the store's settings."""

    def __init__(self, texts: Iterable[str]) -> None:
        joined = "\n".join(texts)
        self.numbers = set(_numbers(joined))
        self.times = _times(joined)
        self.words = {word.lower() for word in _WORD.findall(joined)}

    def check(self, text: str) -> Verdict:
        unsupported: list[str] = []
        for sentence in sentences(text):
            unsupported += [
                m.group(0).strip().rstrip(".") for m in _CLOCK.finditer(sentence) if not _times(m.group(0)) & self.times
            ]
            unsupported += [raw for value, raw in _numbers(sentence).items() if value not in self.numbers]
            unsupported += [name for name in _names(sentence) if name.lower() not in self.words]
        return Verdict(not unsupported, tuple(dict.fromkeys(unsupported)))
