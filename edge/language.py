"""Which language a shopper writes in, and text kept per language.

The box serves Chinese and English. A question is Chinese when Han characters carry it (a product
name or an order number in Latin letters inside a Chinese sentence does not make it English).
Detection is a pure function of the text, so the same question always gets the same language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")

# Text in several languages: a plain string means "the same in every language".
Localized = str | Mapping[str, str]


def detect(text: str) -> str:
    """`zh` when Han characters outnumber Latin words (one Han character ≈ one word), else `en`."""
    han = len(_HAN.findall(text))
    if han == 0:
        return "en"
    return "zh" if han >= len(_LATIN_WORD.findall(text)) else "en"


def han_share(text: str) -> float:
    """Share of Han characters among the letters of `text` (0 for text without letters)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if _HAN.match(ch)) / len(letters)


def pick(value: Localized, language: str) -> str | None:
    """The text of `value` in `language` (a plain string serves every language); None when missing:
    a Chinese shopper must not be shown an English store name inside a Chinese sentence."""
    if isinstance(value, str):
        return value
    return value.get(language)
