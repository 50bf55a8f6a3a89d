"""What the tests share: fixture corpora and processed folders they write, small training settings,
and the real `ksent` entry point in a subprocess. Tests import these from here (never from each
other); the pytest fixtures built on them are in conftest.py."""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline import corpora
from pipeline.core.files import read_json, save_npz, sha256_file
from pipeline.core.stage import adopt_outputs
from pipeline.model import padded
from pipeline.model.embeddings import learn_vectors
from pipeline.predict.runtime import SPINNING_KEY
from pipeline.text.normalize import Normalizer
from pipeline.text.preprocess import Preprocessor
from pipeline.text.segment import Segmenter
from pipeline.text.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = REPO.parent / "shared" / "corpora"

POSITIVE = ["최고의 영화", "정말 재밌어요", "감동적이다", "배우 연기 훌륭하다", "또 보고 싶다", "강력 추천"]
NEGATIVE = ["최악이다", "시간 아깝다", "지루해요", "돈 아까운 영화", "연기 너무 어색하다", "보지 마세요"]
FILLER = ["스토리", "음악", "오늘", "주말에", "친구랑", "극장에서", "그냥", "진짜", "완전", "영화관"]


def synthetic_reviews(n: int, seed: int) -> list[tuple[str, int]]:
    """Reviews whose label follows their sentiment phrase, so a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 2) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words) + rng.choice(["", "!!", "..", " ㅋㅋㅋㅋㅋ", " ^^"]), label))
    return rows


def write_nsmc_file(path: Path, rows: list[tuple[str, int]], start_id: int = 1000,
                    extra_lines: tuple[str, ...] = ()) -> Path:
    lines = ["id\tdocument\tlabel"]
    lines += [f"{start_id + i}\t{text}\t{label}" for i, (text, label) in enumerate(rows)]
    lines += list(extra_lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def register_tiny(monkeypatch, mirror: Path) -> None:
    """Register corpus "tiny" with the checksums of the files now in mirror/tiny/ (call again after editing them)."""
    train, test = mirror / "tiny" / "ratings_train.txt", mirror / "tiny" / "ratings_test.txt"
    spec = dataclasses.replace(
        corpora.CORPORA["nsmc"], name="tiny", description="test fixture", unlabeled=None,
        files=(corpora.CorpusFile(train.name, f"http://127.0.0.1:9/tiny/{train.name}", "train",
                                  sha256=sha256_file(train), size=train.stat().st_size),
               corpora.CorpusFile(test.name, f"http://127.0.0.1:9/tiny/{test.name}", "test", sha256=sha256_file(test),
                                  size=test.stat().st_size)))
    monkeypatch.setitem(corpora.CORPORA, "tiny", spec)


class DieAtPartition:
    """A stage's partition function as the engine tests hand it to Dask: the worker process that gets the
    partition starting at row `start` SIGKILLs itself - once if `marker` is a path (created first, so the
    retry succeeds), every time if it is None. Picklable, so it reaches the workers of a LocalCluster."""

    def __init__(self, fn, start: int, marker: str | None = None):
        self.fn, self.start, self.marker = fn, start, marker

    def __call__(self, path, start, *args):
        if start == self.start:
            try:
                if self.marker:
                    open(self.marker, "x").close()
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:
                pass
        return self.fn(path, start, *args)


class SlowAtPartition:
    """A stage's partition function for the engine tests: the partition starting at row `start` creates
    `marker` and then sleeps `seconds` (time to kill the cluster under it). Picklable, like DieAtPartition."""

    def __init__(self, fn, start: int, marker: str, seconds: float = 120.0):
        self.fn, self.start, self.marker, self.seconds = fn, start, marker, seconds

    def __call__(self, path, start, *args):
        if start == self.start:
            open(self.marker, "w").close()
            time.sleep(self.seconds)
        return self.fn(path, start, *args)


def ksent(*args, cwd=REPO, stdin=None, env=None):
    """Run the real entry point (`python -m pipeline`) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, input=stdin, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def python(code: str, env: dict, path: str = "") -> subprocess.CompletedProcess:
    """Run `python -c code` in a fresh process from the repo; env is laid over ours (a None value removes a
    variable), path goes ahead of the repo on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (path, str(REPO)) if p), **env}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


# a network small enough to train on the fixtures in seconds: as `ksent train` options, and as train() parameters
SMALL_MODEL = ["--epochs", "3", "--embedding-dim", "16", "--units", "16", "--batch-size", "32",
               "--learning-rate", "0.01"]


SMALL = {"embedding_dim": 8, "units": 8, "batch_size": 32, "epochs": 2, "patience": 1, "learning_rate": 0.01}
# write_processed's reviews: fewer phrases than the corpus fixtures, up to 3 filler words
_PROCESSED_POSITIVE = ["최고의 영화", "정말 재밌어요", "감동적이다", "강력 추천"]
_PROCESSED_NEGATIVE = ["최악이다", "시간 아깝다", "지루해요", "보지 마세요"]
_PROCESSED_FILLER = ["스토리", "음악", "오늘", "주말에", "친구랑", "극장에서", "그냥", "진짜"]
ODD_TEXTS = ["", "   ", "🙂🙂🙂", "최고의 영화", "최고의 영화", "최악이다"]   # empty, emoji, duplicates


def processed_reviews(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        phrase = rng.choice(_PROCESSED_POSITIVE if label else _PROCESSED_NEGATIVE)
        words = rng.sample(_PROCESSED_FILLER, rng.randint(0, 3)) + [phrase]
        rng.shuffle(words)
        rows.append((" ".join(words) + rng.choice(["", "!!", " ㅋㅋㅋㅋ", " ^^"]), label))
    return rows


def write_processed(data_dir: Path, corpus: str = "tiny", segmenter: Segmenter | None = None, maxlen: int = 8,
                    sizes=(300, 80, 80), seed: int = 0, vector_dim: int = SMALL["embedding_dim"],
                    row_group_rows: int = 20_000, padding: str = "post") -> Path:
    """A processed/<corpus>/<tok>/ folder as the pad stage writes it, from the real Preprocessor (`padding`
    "post", the pad stage's default, gives the train stage's fused ONNX graph; "pre", that of bundles
    from before right padding, its Loop graph)."""
    segmenter = segmenter or Segmenter("word")
    normalizer = Normalizer()
    odd = [(text, i % 2) for i, text in enumerate(ODD_TEXTS)]
    splits = {"train": processed_reviews(sizes[0], seed), "val": processed_reviews(sizes[1], seed + 1),
              "test": processed_reviews(sizes[2] - len(ODD_TEXTS), seed + 2) + odd}
    train_tokens = [segmenter.segment(normalizer(text)) for text, _ in splits["train"]]
    pre = Preprocessor(normalizer=normalizer, segmenter=segmenter, vocabulary=Vocabulary().fit(train_tokens),
                       maxlen=maxlen, padding=padding)
    out = data_dir / "processed" / corpus / pre.name
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        texts = [text for text, _ in rows]
        table = padded.to_table(pre.transform(texts), [y for _, y in rows], [f"{name}-{i}" for i in range(len(rows))],
                                texts, maxlen)
        pq.write_table(table, out / f"{name}.parquet", row_group_size=row_group_rows)
    (out / "tokenizer.json").write_text(pre.to_json(), encoding="utf-8")
    adopt_outputs("pad", f"{corpus}/{pre.name}", out,
                  [f"{name}.parquet" for name in splits] + ["tokenizer.json"])
    # the pretrain stage's vectors, from the train split (what the stage learns without unlabeled text)
    tokens, vectors = learn_vectors(train_tokens, dim=vector_dim, min_count=1, seed=seed)
    save_npz(out / "vectors.npz", tokens=np.array(tokens, dtype=str), vectors=vectors)
    adopt_outputs("pretrain", f"{corpus}/{pre.name}", out, ["vectors.npz"])
    return out


def trained_bundle(root, tok: str, segmenter=None, padding: str = "post"):
    """write_processed's data under root/data, then train and evaluate tok's bundle on it: its folder."""
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.train import train

    write_processed(root / "data", segmenter=segmenter, padding=padding)
    for stage in (train, evaluate):
        stage("tiny", tok, data_dir=root / "data", artifacts_dir=root / "artifacts", echo=lambda _: None,
              **(SMALL if stage is train else {}))
    return root / "artifacts" / f"tiny-{tok}"


def write_split(data: Path, corpus: str, seed: int, n: int = 60, suffix: str = ""):
    """An interim/<corpus>/split.parquet as the split stage writes it (train/val/test 2:1:1), each text + `suffix`;
    returns its test rows."""
    import pandas as pd

    rows = [(text + suffix, label) for text, label in processed_reviews(n, seed)]
    folder = data / "interim" / corpus
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"id": [str(i) for i in range(n)], "raw": [t for t, _ in rows],
                          "text": [t for t, _ in rows], "label": np.array([y for _, y in rows], np.int8),
                          "split": [("test", "train", "val", "train")[i % 4] for i in range(n)]})
    table.to_parquet(folder / "split.parquet")
    adopt_outputs("split", corpus, folder, ["split.parquet"])
    return table[table["split"] == "test"]


def threads_spin(predictor) -> list[bool]:
    """For each onnxruntime network of a loaded bundle, ensemble or router: whether its threads spin between
    steps (onnxruntime's default) rather than sleep, as its session was made."""
    parts = getattr(predictor, "members", None) or getattr(predictor, "experts", None)
    if parts:
        return [spins for part in parts for spins in threads_spin(part)]
    options = predictor.network.session.get_session_options()
    try:
        return [options.get_session_config_entry(SPINNING_KEY) != "0"]
    except RuntimeError:                                          # not set: onnxruntime's default, spinning
        return [True]


def mark_retrained(bundle_dir: Path) -> None:
    """Change a bundle's bundle.json as retraining would (another checksum), without training."""
    manifest = read_json(bundle_dir / "bundle.json")
    manifest["created_at"] = "retrained"
    (bundle_dir / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")


# --- `ksent serve` in a subprocess ----------------------------------------------------------------

SERVE_START_TIMEOUT = 60.0


class ServerProcess:
    """`python -m pipeline serve ...` in a subprocess; `url` once it listens; stdout lines in `lines`."""

    def __init__(self, bundle: Path, *options: str, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--model", str(bundle),
                                      "--port", "0", *options], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                     env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr_line), daemon=True).start()
        banner = self.next_line(SERVE_START_TIMEOUT)
        if banner is None or not banner.startswith("serving "):
            self.kill()
            raise AssertionError(f"no serving line (got {banner!r}); stderr:\n{''.join(self.stderr)[-3000:]}")
        self.banner = banner
        self.url = banner.split(" at ", 1)[1].split(" ", 1)[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line.rstrip("\n"))
        put(None)

    def _stderr_line(self, line: str | None) -> None:
        if line is not None:
            self.stderr.append(line + "\n")

    def next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def cli_predict_json(bundle: Path, texts: list[str], *options: str) -> list[dict]:
    """What `ksent predict --json [options]` prints for these texts, one argument each."""
    done = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--model", str(bundle), "--json", *options,
                           "--", *texts], cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


# --- the system's Chromium, headless (the web page's test and its screenshot script) -----------------

def chromium(width: int = 1440, height: int = 1000):
    """A Selenium WebDriver on the system's Chromium and chromedriver (never Selenium Manager's download);
    RuntimeError naming what to install when they are missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        raise RuntimeError("the web page test needs Chromium and its WebDriver: apt install chromium "
                           "chromium-driver (Debian/Ubuntu; .ci/run does this)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--lang=ko-KR", "--disable-gpu"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
