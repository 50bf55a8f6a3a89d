"""A user's own export, as the own-data tests and the own-data walk-through (docs/corpora.md) use it: a CSV
nobody declared before, with a byte-order mark, a `True`/`False` recommend column beside a `1`/`0` label
column and a 1-5 star column, imbalanced (about 68% positive), a fifth of its reviews in Latin letters or
emoji only (mostly positive, as in real exports), and a short title column.

    python -m tests.own_export OUT.csv [--rows N]    # from the shopping sample's real reviews (../shared)

The tests build it from synthetic reviews (tests.helpers.synthetic_reviews) in a few hundred rows.
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

COLUMNS = ["review_id", "title", "review", "recommend", "label", "stars"]
LATIN_POSITIVE = ["good", "great product", "love it", "fast shipping", "perfect", "nice quality", "recommend!",
                  "works well", "very good", "best", "Good price", "so cute", "excellent", "OK good"]
LATIN_NEGATIVE = ["bad", "broken", "waste of money", "too small", "not good", "poor quality", "never again",
                  "returned it"]
EMOJI_POSITIVE = ["👍👍", "😍", "👍", "❤️❤️❤️", "^^ 👍"]
EMOJI_NEGATIVE = ["👎", "😡😡", "💩"]

DECLARATION = '''description = "my own export"
text = "review"
id = "review_id"

[format]
type = "csv"

[label]
column = "label"
positive = [1]
negative = [0]

[split]
test_ratio = 0.2
val_ratio = 0.1

[[files]]
path = "{path}"
'''


def export_rows(reviews: list[tuple[str, int]], seed: int, positive_share: float = 0.68,
                latin_share: float = 0.2) -> list[dict]:
    """`reviews` (Korean text, label) subsampled to `positive_share` positive, plus Latin-only and emoji-only
    reviews (`latin_share` of the result, 84% positive), shuffled, as export rows."""
    rng = random.Random(seed)
    positive = [r for r in reviews if r[1] == 1]
    negative = [r for r in reviews if r[1] == 0]
    n_neg = min(len(negative), round(len(positive) * (1 - positive_share) / positive_share))
    korean = positive + rng.sample(negative, n_neg)
    n_latin = round(len(korean) * latin_share / (1 - latin_share))
    latin = []
    for _ in range(n_latin):
        label = int(rng.random() < 0.84)
        if rng.random() < 0.8:
            words = rng.sample(LATIN_POSITIVE if label else LATIN_NEGATIVE, rng.randint(1, 2))
            text = " ".join(words) + rng.choice(["", "!", "!!", " :)"])
        else:
            text = rng.choice(EMOJI_POSITIVE if label else EMOJI_NEGATIVE)
        latin.append((text, label))
    mixed = korean + latin
    rng.shuffle(mixed)
    rows = []
    for i, (text, label) in enumerate(mixed):
        stars = rng.choice((4, 5)) if label else rng.choice((1, 2))
        if i % 23 == 0:
            stars = 3                                   # neutral by stars, still labelled
        rows.append({"review_id": f"g{i:06d}", "title": " ".join(text.split()[:2]), "review": text,
                     "recommend": "True" if label else "False", "label": label, "stars": stars})
    return rows


def write_export(path: Path, rows: list[dict]) -> Path:
    """The rows as the user's CSV: UTF-8 with a byte-order mark, quoted where needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def shopping_reviews(n: int | None = None) -> list[tuple[str, int]]:
    """The shopping sample's real reviews (../shared/corpora), labelled by its rating rule (4-5 positive,
    1-2 negative)."""
    from tests.helpers import SHARED_CORPORA

    with open(SHARED_CORPORA / "naver_shopping_sample" / "train.csv", encoding="utf-8", newline="") as fh:
        rows = [(r["reviews"], int(int(r["target"]) >= 4)) for r in csv.DictReader(fh) if r["target"] != "3"]
    return rows[:n] if n else rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=None, help="Korean reviews taken from the shopping sample.")
    args = parser.parse_args()
    written = export_rows(shopping_reviews(args.rows), seed=1)
    write_export(args.out, written)
    positive = sum(r["label"] for r in written)
    print(f"{args.out}: {len(written):,} rows, {positive / len(written):.1%} positive")
