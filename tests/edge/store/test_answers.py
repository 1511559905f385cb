from pathlib import Path

import pytest

from edge.store.answers import CuratedAnswers
from edge.store.db import memory_database
from edge.store.errors import InvalidParam


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_seed_inserts_only_missing_labels(tmp_path: Path) -> None:
    answers = CuratedAnswers(memory_database())
    csv_path = write(tmp_path / "answers.csv", 'label,answer\nopening_hours,"9-20, Mon-Sat"\nrefund,Keep the receipt\n')
    assert answers.seed_from_csv(csv_path) == 2
    assert answers.seed_from_csv(csv_path) == 0
    assert answers.all() == {"opening_hours": {"en": "9-20, Mon-Sat"}, "refund": {"en": "Keep the receipt"}}


def test_seed_never_overwrites_an_edit(tmp_path: Path) -> None:
    answers = CuratedAnswers(memory_database())
    answers.upsert("refund", "Ask at the service desk", "admin")
    csv_path = write(tmp_path / "answers.csv", "label,answer\nrefund,Keep the receipt\nlost_card,Call us\n")
    assert answers.seed_from_csv(csv_path) == 1
    assert answers.get("refund") == "Ask at the service desk"
    assert answers.get("lost_card") == "Call us"


def test_seed_tolerates_a_bom_and_keeps_the_first_duplicate(tmp_path: Path) -> None:
    answers = CuratedAnswers(memory_database())
    csv_path = write(tmp_path / "answers.csv", "label,answer\nrefund,first\nrefund,second\n", encoding="utf-8-sig")
    assert answers.seed_from_csv(csv_path) == 1
    assert answers.all() == {"refund": {"en": "first"}}


@pytest.mark.parametrize(
    "text",
    [
        "intent,reply\nrefund,Keep it\n",
        "label,answer\nrefund,Keep it\nlost_card,\n",
        "label,answer\n,orphan\n",
        "label,language,answer\nrefund,en,Keep it\nrefund,fr,Gardez-le\n",  # a language the box does not serve
    ],
)
def test_a_malformed_csv_inserts_nothing(tmp_path: Path, text: str) -> None:
    answers = CuratedAnswers(memory_database())
    with pytest.raises(InvalidParam):
        answers.seed_from_csv(write(tmp_path / "answers.csv", text))
    assert answers.all() == {}


def test_upsert_get_and_source() -> None:
    db = memory_database()
    answers = CuratedAnswers(db, clock=lambda: 1234.9)
    assert answers.get("refund") is None
    answers.upsert("refund", "v1", "seed")
    answers.upsert("refund", "v2", "dify-annotation")
    assert answers.get("refund") == "v2"
    row = next(db.query("SELECT * FROM bank_answers"))
    assert row == {
        "label": "refund",
        "language": "en",
        "question": None,
        "answer": "v2",
        "source": "dify-annotation",
        "updated_at": 1234,
    }


def test_answers_per_language_from_the_bilingual_csv(tmp_path: Path) -> None:
    answers = CuratedAnswers(memory_database())
    csv_path = write(
        tmp_path / "answers.csv",
        "label,language,question,answer\n"
        "store.parking,en,Is there parking?,Two hours free.\n"
        "store.parking,zh,可以停车吗？,免费停车两小时。\n"
        "store.toilets,en,Where are the toilets?,Next to the desk.\n",
    )
    assert answers.seed_from_csv(csv_path) == 3
    assert answers.all() == {
        "store.parking": {"en": "Two hours free.", "zh": "免费停车两小时。"},
        "store.toilets": {"en": "Next to the desk."},
    }
    assert answers.get("store.parking", "zh") == "免费停车两小时。" and answers.get("store.toilets", "zh") is None


def test_an_older_database_keeps_its_english_answers(tmp_path: Path) -> None:
    """m006 moves the answers of the single-language table over as English."""
    import sqlite3

    import sqlite_utils

    from edge.store.db import connection_lock
    from edge.store.migrations import MIGRATIONS, migrate

    db = sqlite_utils.Database(sqlite3.connect(":memory:", check_same_thread=False))
    connection_lock(db)
    migrate(db, MIGRATIONS[:5])
    db.execute("INSERT INTO curated_answers (label, answer, source, updated_at) VALUES ('refund', 'Old', 'seed', 1)")
    migrate(db)
    assert CuratedAnswers(db).all() == {"refund": {"en": "Old"}}
