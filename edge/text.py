"""The one text normaliser, shared by training (quantize/) and serving (edge/).

Training and serving must see text the same way, or the model meets inputs at the kiosk that it
never saw in training. Cleaning is deliberately conservative: it removes what carries no meaning
(lone surrogates, control characters, invisible format characters, runs of white space) and folds
compatibility forms with NFKC, but never translates, lower-cases or drops letters of any script.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

_WHITESPACE = re.compile(r"\s+")
# Categories that carry no visible meaning in a customer's question.
_DROP_CATEGORIES = {"Cs", "Cc", "Cf", "Co", "Cn"}
# Control characters that separate words: turned into a space, not deleted, so "a\tb" stays two words.
_SPACING_CONTROLS = {"\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85"}


@dataclass(frozen=True)
class Normalised:
    """A cleaned text and the reasons it differs from its input (empty when unchanged)."""

    text: str
    changes: tuple[str, ...] = field(default_factory=tuple)


def normalise_with_changes(text: str) -> Normalised:
    """Clean `text` and say what was changed, for the data report."""
    changes: list[str] = []
    surrogate_free = "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)
    if surrogate_free != text:
        changes.append("lone surrogate removed")
    kept: list[str] = []
    dropped_invisible = False
    for ch in surrogate_free:
        if ch in _SPACING_CONTROLS:
            kept.append(" ")
        elif unicodedata.category(ch) in _DROP_CATEGORIES:
            dropped_invisible = True
        else:
            kept.append(ch)
    if dropped_invisible:
        changes.append("control or invisible character removed")
    visible = "".join(kept)
    # NFKC after dropping, so that marks a dropped joiner kept apart still compose: idempotent.
    folded = unicodedata.normalize("NFKC", visible)
    if folded != visible:
        changes.append("unicode NFKC")
    joined = folded
    collapsed = _WHITESPACE.sub(" ", joined).strip()
    if collapsed != joined:
        changes.append("white space collapsed")
    return Normalised(collapsed, tuple(changes))


def normalise(text: str) -> str:
    """Clean one customer utterance (see module docstring); idempotent."""
    return normalise_with_changes(text).text
