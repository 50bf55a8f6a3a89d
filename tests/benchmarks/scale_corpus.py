"""A synthetic review corpus of any size in NSMC's format, for scale benchmarks (issue 11).

Each synthetic review joins 1-3 fragments (sentences, or halves of a sentence-less review)
of NSMC train reviews that share its label, so the text is real Korean review language
with a plausible label, while the corpus can be made far larger than NSMC. Deterministic:
the same source file, size and seed give the same bytes. Written in blocks, so memory
does not grow with the size asked for.

    .venv/bin/python tests/benchmarks/scale_corpus.py --rows 5000000 --seed 0 \\
        --out data/scale/ratings_train.txt [--source ../shared/corpora/nsmc/ratings_train.txt]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from pipeline.core.files import atomic_path
from pipeline.corpora import CORPORA
from pipeline.corpora.readers import read_file

REPO = Path(__file__).resolve().parents[2]
BLOCK = 100_000
_SENTENCE_END = re.compile(r"(?<=[.!?~])\s+")


def fragments(source: Path) -> dict[int, list[str]]:
    """Review fragments of the source NSMC file by label (0, 1); malformed and empty rows are skipped."""
    out: dict[int, list[str]] = {0: [], 1: []}
    table, _ = read_file(source, CORPORA["nsmc"], "train")         # malformed rows are counted, not returned
    for text, label in zip(table["text"], table["label"].tolist(), strict=True):
        if not text.strip():
            continue
        parts = [p for p in _SENTENCE_END.split(text.strip()) if p]
        if len(parts) == 1:
            words = text.split()
            parts = [" ".join(words[:len(words) // 2]), " ".join(words[len(words) // 2:])] if len(words) > 3 \
                else [text.strip()]
        out[label].extend(p.replace("\t", " ") for p in parts if p)
    if not out[0] or not out[1]:
        raise SystemExit(f"{source}: needs reviews of both labels")
    return out


def generate(source: Path, rows: int, seed: int, out: Path) -> None:
    """Write `rows` synthetic reviews (header `id\\tdocument\\tlabel`) to `out`, atomically."""
    pool = {label: np.array(texts, dtype=object) for label, texts in fragments(source).items()}
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("id\tdocument\tlabel\n")
        for start in range(0, rows, BLOCK):
            n = min(BLOCK, rows - start)
            labels = rng.integers(0, 2, n)
            counts = rng.integers(1, 4, n)
            lines = []
            for i, (label, k) in enumerate(zip(labels, counts, strict=True)):
                texts = pool[int(label)]
                parts = texts[rng.integers(0, len(texts), int(k))]
                lines.append(f"{start + i + 1}\t{' '.join(parts)}\t{int(label)}\n")
            fh.writelines(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path,
                        default=REPO.parent / "shared" / "corpora" / "nsmc" / "ratings_train.txt")
    args = parser.parse_args()
    if args.rows < 1:
        raise SystemExit("--rows must be at least 1")
    generate(args.source, args.rows, args.seed, args.out)
    print(f"{args.out}: {args.rows:,} synthetic reviews (seed {args.seed}) from {args.source}")


if __name__ == "__main__":
    main()
