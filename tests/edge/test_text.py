import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from edge.text import normalise, normalise_with_changes


@given(st.text())
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


@given(st.text())
def test_output_has_no_junk(text: str) -> None:
    out = normalise(text)
    assert out == out.strip()
    assert "  " not in out
    for ch in out:
        assert not 0xD800 <= ord(ch) <= 0xDFFF
        assert unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn"}


@given(st.text(alphabet=st.characters(whitelist_categories=["Lo"]), min_size=1))
def test_letters_of_any_script_survive(text: str) -> None:
    # NFKC may fold compatibility forms, but never drops letters outright.
    assert normalise(text) == " ".join(unicodedata.normalize("NFKC", text).split())


def test_lone_surrogate_is_removed_and_reported() -> None:
    result = normalise_with_changes("where is\ud800 my refund")
    assert result.text == "where is my refund"
    assert "lone surrogate removed" in result.changes


def test_invisible_characters_and_controls() -> None:
    assert normalise("re\u200bfund\u00adable\ufeff") == "refundable"
    assert normalise("cancel\torder\r\nnow\x07") == "cancel order now"


def test_nfkc_folds_fullwidth_but_keeps_chinese_meaning() -> None:
    assert normalise("ＲＥＦＵＮＤ　１２３") == "REFUND 123"
    assert normalise("今天会天晴吗？") == "今天会天晴吗?"
    assert normalise_with_changes("plain text").changes == ()
