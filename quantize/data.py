"""Read labelled utterances (`text,label` CSV or JSONL) and clean them, reporting every change.

Cleaning uses the runtime's own normaliser (`edge.text`), so the model trains on text exactly as
the box will see it. Rows are dropped for being empty, exact duplicates, or for carrying a text
that other rows label differently (a contradiction the model cannot learn); each drop and change
is recorded so the report can say what happened to the data.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge.text import normalise_with_changes

MAX_SHOWN = 20
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}


class DataError(Exception):
    """The data cannot be used as given; the message says what to fix."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass
class CleaningReport:
    """What cleaning did to a file: counts by reason and a few examples of each."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    changed: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    conflicts: dict[str, list[str]] = field(default_factory=dict)

    def note(self, reason: str, line: int, text: str) -> None:
        shown = self.samples[reason]
        if len(shown) < MAX_SHOWN:
            shown.append(f"line {line}: {text[:80]!r}")

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "changed": dict(self.changed),
            "dropped": dict(self.dropped),
            "samples": {reason: list(lines) for reason, lines in self.samples.items()},
            "conflicts": dict(list(self.conflicts.items())[:MAX_SHOWN]),
        }


def _read_raw(path: Path) -> list[tuple[int, object, object]]:
    """(line number, text, label) of each record, before any cleaning."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        content = path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror})") from exc
    if path.suffix.lower() in _JSONL_SUFFIXES:
        return _parse_jsonl(path, content)
    return _parse_csv(path, content)


def _parse_csv(path: Path, content: str) -> list[tuple[int, object, object]]:
    try:
        reader = csv.DictReader(content.splitlines(keepends=True))
        fields = reader.fieldnames or []
        missing = [name for name in ("text", "label") if name not in fields]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; the header has {fields or 'nothing'} "
                "(expected a header with `text` and `label`)"
            )
        return [(reader.line_num, row.get("text"), row.get("label")) for row in reader]
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc


def _parse_jsonl(path: Path, content: str) -> list[tuple[int, object, object]]:
    records: list[tuple[int, object, object]] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise DataError(f"{path}: line {number} must be an object with `text` and `label`")
        records.append((number, record["text"], record["label"]))
    return records


def load_examples(path: Path) -> tuple[list[Example], CleaningReport]:
    """Read and clean a file; returns the kept examples (in file order) and the report."""
    path = Path(path)
    report = CleaningReport(source=str(path))
    candidates: list[tuple[int, Example]] = []
    for line, raw_text, raw_label in _read_raw(path):
        report.rows_read += 1
        if not isinstance(raw_text, str) or not isinstance(raw_label, (str, int)):
            report.dropped["missing or non-text field"] += 1
            report.note("missing or non-text field", line, repr(raw_text))
            continue
        cleaned = normalise_with_changes(raw_text)
        label = normalise_with_changes(str(raw_label)).text
        for change in cleaned.changes:
            report.changed[change] += 1
            report.note(change, line, raw_text)
        if not cleaned.text:
            report.dropped["empty text"] += 1
            report.note("empty text", line, raw_text)
            continue
        if not label:
            report.dropped["empty label"] += 1
            report.note("empty label", line, raw_text)
            continue
        candidates.append((line, Example(cleaned.text, label)))
    kept = _drop_duplicates_and_conflicts(candidates, report)
    if not kept:
        raise DataError(f"{path}: no usable rows (read {report.rows_read}, dropped {dict(report.dropped)})")
    return kept, report


def load_files(paths: Sequence[Path]) -> tuple[list[Example], list[CleaningReport]]:
    """Read and clean several files as one data set, in order; one report per file.

    Duplicates and contradictions are also looked for across the files; when there are any, a last
    report (source `across files`) says what was dropped.
    """
    if not paths:
        raise DataError("no data files given")
    candidates: list[tuple[int, Example]] = []
    reports: list[CleaningReport] = []
    for path in paths:
        examples, report = load_examples(path)
        reports.append(report)
        candidates += [(len(candidates) + 1, example) for example in examples]
    if len(paths) == 1:
        return [example for _, example in candidates], reports
    across = CleaningReport(source="across files", rows_read=len(candidates))
    kept = _drop_duplicates_and_conflicts(candidates, across)
    if not kept:
        raise DataError(f"no usable rows across {', '.join(str(p) for p in paths)}")
    if across.dropped:
        reports.append(across)
    return kept, reports


def _drop_duplicates_and_conflicts(candidates: list[tuple[int, Example]], report: CleaningReport) -> list[Example]:
    """Drop exact duplicates, and every row whose text other rows label differently; note both in `report`."""
    seen: set[Example] = set()
    unique: list[tuple[int, Example]] = []
    for line, example in candidates:
        if example in seen:
            report.dropped["exact duplicate"] += 1
            report.note("exact duplicate", line, example.text)
            continue
        seen.add(example)
        unique.append((line, example))

    labels_of: dict[str, set[str]] = defaultdict(set)
    for _, example in unique:
        labels_of[example.text].add(example.label)
    contradicted = {text for text, labels in labels_of.items() if len(labels) > 1}
    kept: list[Example] = []
    for line, example in unique:
        if example.text in contradicted:
            report.dropped["same text under several labels"] += 1
            report.note("same text under several labels", line, example.text)
            report.conflicts[example.text] = sorted(labels_of[example.text])
            continue
        kept.append(example)
    report.rows_kept = len(kept)
    return kept


def check_label_counts(
    examples: list[Example], min_examples: int, *, drop_rare: bool = False
) -> tuple[list[Example], dict[str, int]]:
    """Refuse labels with fewer than `min_examples` rows, or drop them when asked to.

    Returns the examples to keep and the dropped labels with their counts.
    """
    counts = Counter(example.label for example in examples)
    rare = {label: count for label, count in counts.items() if count < min_examples}
    if rare and not drop_rare:
        listed = ", ".join(f"{label} ({count})" for label, count in sorted(rare.items()))
        raise DataError(
            f"{len(rare)} label(s) have fewer than {min_examples} examples to train on: {listed}. "
            "Add examples, lower --min-examples, or pass --drop-rare-labels to leave them out."
        )
    kept = [example for example in examples if example.label not in rare]
    if len({example.label for example in kept}) < 2:
        raise DataError("at least two labels with enough examples are needed to train a classifier")
    return kept, rare


def fingerprint(examples: list[Example]) -> str:
    """A sha256 over the cleaned rows, independent of file format and row order."""
    digest = hashlib.sha256()
    for example in sorted(examples, key=lambda e: (e.label, e.text)):
        digest.update(f"{example.label}\t{example.text}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
