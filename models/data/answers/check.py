"""Check the answer bank and its intent data; standard library only.

    python models/data/answers/check.py            # errors exit 1; near-copies are warnings
    python models/data/answers/check.py --strict   # near-copies between train and dev are errors too

What it checks (see SOURCE.md in this folder):
- answers.csv has the columns label,language,question,answer; language is en or zh; every label has
  exactly one en and one zh row; no empty field; the {{Slot}} names of the zh answer equal those of
  the en answer; zh rows contain CJK characters and en rows none.
- train.csv and dev.csv have the columns text,label; every label is in answers.csv or is `oos`; a row
  with CJK characters is Chinese, one without is English and may not hold full-width punctuation.
- No text appears twice anywhere in train + dev (compared case-folded, NFKC, without whitespace and
  punctuation), so never in both splits nor under two labels; a canonical question of answers.csv
  may appear in train under its own label only, never in dev.
- Every answer label has Chinese rows in train and dev; every `store.*` label also English ones.
- If ../bitext_retail/ and ../oos/ are present: no text here also appears there under another label,
  and no dev text here is a training text there (nor the other way round).
- Warns when a dev text is a near-copy of a train text with the same label (one word or a couple
  of characters changed), so dev stays held out. Near-copies under different labels are allowed:
  they are deliberate contrasts ("I need a duplicate key" / "I need a duplicate receipt").
Prints the number of rows per label and language for each file.
"""

from __future__ import annotations

import csv
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
FULLWIDTH = re.compile(r"[\u3000-\u303f\uff00-\uffef\u201c\u201d\u2018\u2019]")
SLOT = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
OOS = "oos"

errors: list[str] = []
warnings: list[str] = []


def error(msg: str) -> None:
    errors.append(msg)


def warn(msg: str) -> None:
    warnings.append(msg)


def read(path: Path, columns: list[str]) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != columns:
            error(f"{path.name}: columns {reader.fieldnames}, expected {columns}")
            return []
        rows = list(reader)
    for i, row in enumerate(rows, start=2):
        for col in columns:
            value = row.get(col)
            if value is None or not value.strip():
                error(f"{path.name}:{i}: empty {col}")
            elif value != value.strip():
                error(f"{path.name}:{i}: {col} has leading or trailing whitespace")
    return rows


def key(text: str) -> str:
    """What counts as the same text: NFKC, case-folded, no whitespace, no punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith("P"))


def language(text: str) -> str:
    return "zh" if CJK.search(text) else "en"


def units(text: str) -> list[str]:
    """Words for English, characters for Chinese (on the normalised text)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    if language(text) == "en":
        return re.findall(r"[a-z0-9]+", norm.replace("'", ""))
    return [ch for ch in norm if not ch.isspace() and not unicodedata.category(ch).startswith("P")]


def distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def near_copy(a: str, b: str) -> bool:
    ua, ub = units(a), units(b)
    longest = max(len(ua), len(ub))
    if language(a) == "en":
        return longest >= 3 and distance(ua, ub) <= 1
    return distance(ua, ub) <= (2 if longest >= 8 else 1)


def check_answers(rows: list[dict[str, str]]) -> dict[str, dict[str, dict[str, str]]]:
    bank: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for i, row in enumerate(rows, start=2):
        label, lang = row["label"], row["language"]
        if lang not in ("en", "zh"):
            error(f"answers.csv:{i}: language {lang!r} is not en or zh")
            continue
        if lang in bank[label]:
            error(f"answers.csv:{i}: second {lang} row for {label}")
        bank[label][lang] = row
        for col in ("question", "answer"):
            text = row[col]
            if lang == "zh" and not CJK.search(text):
                error(f"answers.csv:{i}: zh {col} has no CJK characters: {text!r}")
            if lang == "en" and CJK.search(text):
                error(f"answers.csv:{i}: en {col} has CJK characters: {text!r}")
            if lang == "en" and FULLWIDTH.search(text):
                error(f"answers.csv:{i}: en {col} has full-width punctuation: {text!r}")
            if text.count("{{") != text.count("}}") or len(SLOT.findall(text)) != text.count("{{"):
                error(f"answers.csv:{i}: malformed slot in {col}: {text!r}")
        if SLOT.search(row["question"]):
            error(f"answers.csv:{i}: slot in the question of {label}")
    if OOS in bank:
        error("answers.csv: `oos` is not an answer label")
    for label, langs in sorted(bank.items()):
        for lang in ("en", "zh"):
            if lang not in langs:
                error(f"answers.csv: {label} has no {lang} row")
        if "en" in langs and "zh" in langs:
            en_slots = sorted(SLOT.findall(langs["en"]["answer"]))
            zh_slots = sorted(SLOT.findall(langs["zh"]["answer"]))
            if en_slots != zh_slots:
                error(f"answers.csv: {label}: slots en {en_slots} != zh {zh_slots}")
    return bank


def check_split(name: str, rows: list[dict[str, str]], labels: set[str]) -> None:
    for i, row in enumerate(rows, start=2):
        text, label = row["text"], row["label"]
        if label not in labels and label != OOS:
            error(f"{name}:{i}: label {label!r} is not in answers.csv and not {OOS!r}")
        if language(text) == "en":
            if FULLWIDTH.search(text):
                error(f"{name}:{i}: English row with full-width punctuation: {text!r}")
            if not re.search(r"[A-Za-z]", text):
                error(f"{name}:{i}: neither Chinese nor English: {text!r}")
        elif len(CJK.findall(text)) < 2:
            error(f"{name}:{i}: Chinese row with fewer than 2 CJK characters: {text!r}")


def check_duplicates(splits: dict[str, list[dict[str, str]]], bank: dict) -> None:
    seen: dict[str, tuple[str, int, str, str]] = {}
    for name, rows in splits.items():
        for i, row in enumerate(rows, start=2):
            k = key(row["text"])
            if not k:
                continue
            if k in seen:
                other = seen[k]
                error(
                    f"duplicate text: {name}:{i} {row['text']!r} ({row['label']}) "
                    f"= {other[0]}:{other[1]} {other[2]!r} ({other[3]})"
                )
            else:
                seen[k] = (name, i, row["text"], row["label"])
    for label, langs in bank.items():
        for lang, row in langs.items():
            k = key(row["question"])
            if k in seen:
                name, i, text, other_label = seen[k]
                if name == "dev.csv":
                    error(f"dev.csv:{i}: {text!r} is the canonical question of {label} ({lang})")
                elif other_label != label:
                    error(f"{name}:{i}: {text!r} ({other_label}) is the canonical question of {label}")


def check_near_copies(train: list[dict[str, str]], dev: list[dict[str, str]]) -> None:
    by_lang: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in train:
        by_lang[language(row["text"])].append(row)
    for i, row in enumerate(dev, start=2):
        for other in by_lang[language(row["text"])]:
            if other["label"] == row["label"] and near_copy(row["text"], other["text"]):
                warn(
                    f"dev.csv:{i}: {row['text']!r} ({row['label']}) is a near-copy of train "
                    f"{other['text']!r} ({other['label']})"
                )


def check_coverage(train: list[dict[str, str]], dev: list[dict[str, str]], labels: set[str]) -> None:
    for name, rows in (("train.csv", train), ("dev.csv", dev)):
        have = Counter((row["label"], language(row["text"])) for row in rows)
        for label in sorted(labels):
            if not have[(label, "zh")]:
                error(f"{name}: no Chinese rows for {label}")
            if label.startswith("store.") and not have[(label, "en")]:
                error(f"{name}: no English rows for {label}")
        for lang in ("en", "zh"):
            if not have[(OOS, lang)]:
                error(f"{name}: no {lang} rows labelled {OOS}")


def check_siblings(train: list[dict[str, str]], dev: list[dict[str, str]]) -> None:
    """Against the other intent data the classifier trains and calibrates on, when present."""
    data = HERE.parent
    others = {
        "bitext_retail/train.csv": data / "bitext_retail" / "train.csv",
        "bitext_retail/dev.csv": data / "bitext_retail" / "dev.csv",
        "oos/train.csv": data / "oos" / "train.csv",
        "oos/dev.csv": data / "oos" / "dev.csv",
    }
    if not all(path.exists() for path in others.values()):
        print("(sibling data not found: skipped the check against bitext_retail/ and oos/)")
        return
    theirs: dict[str, dict[str, str]] = {}
    for name, path in others.items():
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                theirs.setdefault(key(row["text"]), {})[name] = row["label"]
    for name, rows in (("train.csv", train), ("dev.csv", dev)):
        for i, row in enumerate(rows, start=2):
            for other_name, other_label in theirs.get(key(row["text"]), {}).items():
                if other_label != row["label"]:
                    error(f"{name}:{i}: {row['text']!r} ({row['label']}) is {other_label} in {other_name}")
                elif name.split(".")[0] != other_name.split("/")[1].split(".")[0]:
                    error(f"{name}:{i}: {row['text']!r} is also in {other_name} (split leak)")


def print_counts(bank: dict, train: list[dict[str, str]], dev: list[dict[str, str]]) -> None:
    tr = Counter((row["label"], language(row["text"])) for row in train)
    dv = Counter((row["label"], language(row["text"])) for row in dev)
    labels = [*sorted(bank), OOS]
    width = max(len(label) for label in labels)
    print(f"{'label':<{width}}  answers  train en  train zh  dev en  dev zh")
    for label in labels:
        langs = "+".join(sorted(bank.get(label, {}))) or "-"
        print(
            f"{label:<{width}}  {langs:<7}  {tr[(label, 'en')]:>8}  {tr[(label, 'zh')]:>8}"
            f"  {dv[(label, 'en')]:>6}  {dv[(label, 'zh')]:>6}"
        )
    print(
        f"{'total':<{width}}  {sum(len(v) for v in bank.values()):<7}  "
        f"{sum(v for (_, g), v in tr.items() if g == 'en'):>8}  {sum(v for (_, g), v in tr.items() if g == 'zh'):>8}"
        f"  {sum(v for (_, g), v in dv.items() if g == 'en'):>6}  {sum(v for (_, g), v in dv.items() if g == 'zh'):>6}"
    )
    slots = sorted({s for langs in bank.values() for row in langs.values() for s in SLOT.findall(row["answer"])})
    print(f"labels: {len(bank)} ({sum(1 for name in bank if name.startswith('store.'))} store.*), slots used: {slots}")


def main() -> int:
    strict = "--strict" in sys.argv[1:]
    answers = read(HERE / "answers.csv", ["label", "language", "question", "answer"])
    train = read(HERE / "train.csv", ["text", "label"])
    dev = read(HERE / "dev.csv", ["text", "label"])
    bank = check_answers(answers)
    labels = set(bank)
    check_split("train.csv", train, labels)
    check_split("dev.csv", dev, labels)
    check_duplicates({"train.csv": train, "dev.csv": dev}, bank)
    check_coverage(train, dev, labels)
    check_near_copies(train, dev)
    check_siblings(train, dev)
    print_counts(bank, train, dev)
    for msg in warnings:
        print(f"WARNING: {msg}")
    for msg in errors:
        print(f"ERROR: {msg}")
    failed = bool(errors) or (strict and bool(warnings))
    print(f"{len(errors)} error(s), {len(warnings)} warning(s): {'FAILED' if failed else 'OK'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
