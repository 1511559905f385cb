import json
from pathlib import Path

import pytest

from quantize.data import DataError, Example, check_label_counts, fingerprint, load_examples, load_files
from tests.conftest import SHARED_DATA, write_csv


def test_csv_cleaning_reports_every_change(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "d.csv",
        [
            ("cancel my order", "order.cancel_order"),
            ("cancel   my order", "order.cancel_order"),  # duplicate after cleaning
            ("   ", "order.cancel_order"),  # empty
            ("refund\u200b please\ud800", "refund.get_refund"),  # invisible + surrogate
            ("where is it", "delivery.delivery_period"),
            ("where is it", "order.track_order"),  # same text, two labels
            ("ＨＥＬＬＯ", "contact.contact_human_agent"),
        ],
    )
    examples, report = load_examples(path)
    assert examples == [
        Example("cancel my order", "order.cancel_order"),
        Example("refund please", "refund.get_refund"),
        Example("HELLO", "contact.contact_human_agent"),
    ]
    assert report.rows_read == 7 and report.rows_kept == 3
    assert report.dropped == {"exact duplicate": 1, "empty text": 1, "same text under several labels": 2}
    assert report.changed["lone surrogate removed"] == 1
    assert report.changed["unicode NFKC"] == 1
    assert report.conflicts == {"where is it": ["delivery.delivery_period", "order.track_order"]}


def test_jsonl_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"text": "hi", "label": "a.b"}, {"text": "yo", "label": "c.d"}]))
    examples, _ = load_examples(path)
    assert [e.label for e in examples] == ["a.b", "c.d"]


def test_invalid_utf8_bytes_are_cleaned_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nrefund \xff\xfe now,refund.get_refund\n")
    examples, report = load_examples(path)
    assert examples == [Example("refund now", "refund.get_refund")]
    assert report.changed["lone surrogate removed"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"question,answer\nhi,there\n", "missing column"),
        (b"text\nhi\n", "missing column\\(s\\) label"),
        (b"", "missing column"),
        (b"text,label\n\x00\x00,bad\n", "no usable rows"),
        (b'text,label\n"unterminated,a\n', "no usable rows|label"),
    ],
)
def test_unusable_csv_is_refused_clearly(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_examples(path)


def test_bad_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "b"}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_examples(path)


def test_missing_file() -> None:
    with pytest.raises(DataError, match="no such file"):
        load_examples(Path("/nonexistent/data.csv"))


def test_rare_labels_refused_or_dropped() -> None:
    data = [Example(f"t{i}", "a") for i in range(10)] + [Example(f"u{i}", "b") for i in range(10)]
    data += [Example("lonely", "c")]
    with pytest.raises(DataError, match=r"c \(1\)"):
        check_label_counts(data, 5)
    kept, dropped = check_label_counts(data, 5, drop_rare=True)
    assert dropped == {"c": 1} and {e.label for e in kept} == {"a", "b"}


def test_one_label_is_not_a_classifier() -> None:
    with pytest.raises(DataError, match="two labels"):
        check_label_counts([Example(f"t{i}", "a") for i in range(10)], 2)


def test_fingerprint_ignores_order() -> None:
    a = [Example("x", "1"), Example("y", "2")]
    assert fingerprint(a) == fingerprint(list(reversed(a)))
    assert fingerprint(a) != fingerprint([Example("x", "1")])


def test_chinese_data_passes_through_unchanged_in_meaning() -> None:
    path = SHARED_DATA / "xsid_zh" / "train.csv"
    if not path.exists():
        pytest.skip("../shared/data is not beside this checkout")
    examples, report = load_examples(path)
    assert report.rows_kept >= 230
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in e.text) for e in examples[:50])
    _, dropped = check_label_counts(examples, 3, drop_rare=True)
    assert dropped and all(count < 3 for count in dropped.values())


def test_several_files_are_one_data_set(tmp_path: Path) -> None:
    retail = write_csv(tmp_path / "retail.csv", [("cancel my order", "order.cancel_order"), ("hi there", "x.y")])
    oos = write_csv(
        tmp_path / "oos.csv", [("what is the weather", "oos"), ("cancel my order", "oos"), ("hi there", "x.y")]
    )
    examples, reports = load_files([retail, oos])
    # a text labelled differently in two files is a contradiction; the same row twice is a duplicate
    assert examples == [Example("hi there", "x.y"), Example("what is the weather", "oos")]
    assert [r.source for r in reports] == [str(retail), str(oos), "across files"]
    assert reports[-1].dropped == {"exact duplicate": 1, "same text under several labels": 2}
    assert reports[-1].conflicts == {"cancel my order": ["oos", "order.cancel_order"]}


def test_one_file_needs_no_cross_file_report(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [("a", "1"), ("b", "2")])
    examples, reports = load_files([path])
    assert len(examples) == 2 and [r.source for r in reports] == [str(path)]
    with pytest.raises(DataError, match="no data files"):
        load_files([])
