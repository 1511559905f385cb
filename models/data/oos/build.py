"""Build `train.csv` and `dev.csv` (label `oos`) from CLINC150 (CC BY 3.0); SOURCE.md says what and why.

Run: `.venv/bin/python models/data/oos/build.py` from the repo. It reads CLINC150 as kept in
`../shared/data/clinc150/` beside the repo (`--clinc` for elsewhere) and rewrites the two CSVs
here; the same input always gives the same files, byte for byte.

Selection: CLINC's own `oos` rows, plus a few rows of every CLINC intent that a retail store's
kiosk does not serve. Domains and intents that overlap retail customer service, or that a kiosk
customer says as part of a normal conversation, are left out, and so is any row that names a
retail customer-service topic. Train rows come only from CLINC's train split, dev rows only from
its validation split.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CLINC = ROOT.parent / "shared" / "data" / "clinc150"
OOS = "oos"
SEED = 13
TRAIN_PER_INTENT = 5
DEV_PER_INTENT = 1
# Bitext ends 61% of its question-form rows with "?"; CLINC ends none. Without this, a question
# mark would be a cue for "in scope" that has nothing to do with the question.
QUESTION_MARK_SHARE = 0.6

EXCLUDED_DOMAINS = {
    "banking": "payments, accounts and bills",
    "credit_cards": "payments, cards and accounts",
    "meta": "talking to the assistant itself (yes, no, cancel, repeat): part of a normal conversation",
    "small_talk": "greetings, thanks, goodbyes: part of a normal conversation",
}
EXCLUDED_INTENTS = {
    "auto_and_commute.uber": "ordering a ride",
    "home.order": "orders",
    "home.order_status": "orders",
    "home.shopping_list": "shopping",
    "home.shopping_list_update": "shopping",
    "kitchen_and_dining.cancel_reservation": "cancellations",
    "kitchen_and_dining.restaurant_reviews": "reviews (feedback.review)",
    "travel.exchange_rate": "currencies and payments",
    "travel.lost_luggage": "a complaint about a lost item in transit (deliveries, complaints)",
    "travel.travel_notification": "telling the bank about travel (accounts, cards)",
    "utility.make_call": "reaching a person (contact.*)",
    "utility.text": "messaging a person (contact.*)",
    "work.direct_deposit": "payments and accounts",
    "work.income": "payments",
    "work.insurance_change": "changing a plan or account",
    "work.payday": "payments",
    "work.rollover_401k": "accounts",
    "work.taxes": "payments",
    "work.w2": "tax documents, close to invoices",
}
# A row naming any of these is left out wherever it comes from (CLINC's `oos` rows too): the 27
# retail intents' topics (orders, cancellations, refunds, returns, deliveries, payments, invoices,
# accounts, newsletters, contacting a person, complaints and reviews, fees, addresses) and shopping.
RETAIL_TERMS = re.compile(
    r"\b(?:orders?|ordered|ordering|cancel\w*|refund\w*|return\w*|deliver\w*|ship|shipping|shipped|shipment\w*"
    r"|packages?|parcels?|pay|pays|paid|paying|payments?|bills?|billing|billed|invoices?|receipts?"
    r"|accounts?|passwords?|log ?in|sign ?(?:in|up)|regist\w*|subscri\w*|newsletters?|customer service"
    r"|agents?|representatives?|human|(?:speak|talk) (?:to|with)|complain\w*|feedback|reviews?|fees?"
    r"|charge[ds]?|purchase\w*|buy\w*|bought|sell\w*|sold|prices?|deals?|discounts?|coupons?|shop\w*"
    r"|stores?|address\w*)\b"
)
QUESTION = re.compile(
    r"^(?:what|what's|how|when|where|who|whom|whose|why|which|is|are|am|was|were|do|does|did|can|could|will"
    r"|would|should|shall|may|might|have|has|had)\b"
)


def read(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(row["text"].strip(), row["label"]) for row in csv.DictReader(handle)]


def excluded(label: str) -> bool:
    return label.split(".", 1)[0] in EXCLUDED_DOMAINS or label in EXCLUDED_INTENTS


def select(rows: list[tuple[str, str]], per_intent: int, rng: random.Random, avoid: set[str]) -> list[str]:
    """All `oos` rows, then `per_intent` rows of each kept intent (sorted, then a seeded shuffle)."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        if text and not excluded(label) and not RETAIL_TERMS.search(text.lower()) and text.lower() not in avoid:
            by_label[label].append(text)
    chosen = sorted(set(by_label.pop(OOS, [])))
    for label in sorted(by_label):
        texts = sorted(set(by_label[label]))
        if len(texts) < per_intent:
            raise SystemExit(f"{label}: only {len(texts)} usable rows, {per_intent} wanted")
        rng.shuffle(texts)
        chosen += texts[:per_intent]
    return chosen


def punctuate(text: str, rng: random.Random) -> str:
    if QUESTION.match(text.lower()) and not text.endswith("?") and rng.random() < QUESTION_MARK_SHARE:
        return text.rstrip(" .") + "?"
    return text


def write(path: Path, texts: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows((text, OOS) for text in texts)


def build(clinc: Path, out: Path) -> dict[str, int]:
    rng = random.Random(SEED)
    train_rows, dev_rows = read(clinc / "train.csv"), read(clinc / "dev.csv")
    train = [punctuate(text, rng) for text in select(train_rows, TRAIN_PER_INTENT, rng, avoid=set())]
    seen = {text.lower().rstrip("?") for text, _ in train_rows}  # no dev text that CLINC also trains on
    dev = [punctuate(text, rng) for text in select(dev_rows, DEV_PER_INTENT, rng, avoid=seen)]
    out.mkdir(parents=True, exist_ok=True)
    write(out / "train.csv", train)
    write(out / "dev.csv", dev)
    return {"train": len(train), "dev": len(dev)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinc", type=Path, default=CLINC, help="folder with CLINC150 train.csv and dev.csv")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write train.csv and dev.csv")
    args = parser.parse_args()
    counts = build(args.clinc, args.out)
    print(f"wrote {counts['train']} train and {counts['dev']} dev rows to {args.out}")


if __name__ == "__main__":
    main()
