"""`ksent predict` input and output: one result per input line (pipeline.predict.lines), quiet start-up
(pipeline.core.quiet)."""
from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

from pipeline.errors import PipelineError
from pipeline.predict.lines import format_plain, iter_lines, read_lines, read_path_lines
from tests.helpers import REPO, ksent, python

SEPARATORS = "\u2028\u2029\x0b\x0c\x1c\x1d\x1e\x85"   # str.splitlines() breaks on these; ksent does not


def lines(data: bytes, chunk_size: int = 1 << 16) -> list[str]:
    return read_lines(io.BytesIO(data), "input", chunk_size)


@pytest.mark.parametrize("data, expected", [
    ("재밌다\u2028지루해\n최고\n".encode(), ["재밌다\u2028지루해", "최고"]),
    (b"".join(f"a{c}b\n".encode() for c in SEPARATORS), [f"a{c}b" for c in SEPARATORS]),
    (b"one\r\ntwo\r\n", ["one", "two"]),
    (b"lone\rcr\nend\r", ["lone\rcr", "end\r"]),          # only \r\n ends a line, a lone \r stays
    (b"\xef\xbb\xbf\xec\xb5\x9c\xea\xb3\xa0\n", ["최고"]),    # BOM dropped
    (b"a\n\xef\xbb\xbfb\n", ["a", "\ufeffb"]),              # ... only at the start of the input
    (b"no final newline", ["no final newline"]),
    (b"a\n\n\nb\n\n", ["a", "", "", "b", ""]),              # empty lines are empty reviews
    (b"\n", [""]),
    (b"", []),
    (b"\xef\xbb\xbf", []),
    (b"\xef\xbb\xbf\n", [""]),
])
def test_a_line_ends_at_newline_only(data, expected):
    assert lines(data) == expected


@pytest.mark.parametrize("data", [
    "\ufeff첫째 줄\r\n둘째\u2028줄\n\n셋째\r\r\n마지막 🎬".encode(),
    "가\r\n\r\n나\r".encode(),
    "\ufeff".encode() + "한".encode() * 5,
])
def test_chunk_boundaries_do_not_change_the_lines(data):
    expected = lines(data)
    for chunk_size in range(1, len(data) + 2):   # splits every multi-byte character, BOM and \r\n
        assert lines(data, chunk_size) == expected, chunk_size


class ShortReads(io.RawIOBase):
    """A stream without read1 that returns at most 2 bytes a call, like a slow pipe."""

    def __init__(self, data: bytes):
        self.data = data

    def readable(self):
        return True

    def read(self, n=-1):
        piece, self.data = self.data[:min(n, 2)], self.data[min(n, 2):]
        return piece


def test_short_reads_from_a_stream_without_read1():
    data = "좋아요\r\n별로\u2028예요\n".encode()
    assert read_lines(ShortReads(data), "pipe") == ["좋아요", "별로\u2028예요"]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 1 << 16])
def test_invalid_utf8_names_line_and_byte(chunk_size):
    data = "\ufeff좋다\r\n별로\n".encode() + b"ok \xea\xb0 x\n" + b"never read\n"
    bad = data.index(b"\xea\xb0 ")
    stream = iter_lines(io.BytesIO(data), "reviews.txt", chunk_size)
    assert [next(stream), next(stream)] == ["좋다", "별로"]   # lines before the bad one are yielded
    with pytest.raises(PipelineError, match=rf"^reviews.txt is not valid UTF-8 \(line 3, byte {bad}\); "
                                            r"convert it first, e\.g\. iconv -f CP949 -t UTF-8$"):
        next(stream)


def test_cp949_file_is_refused_on_its_first_line():
    with pytest.raises(PipelineError, match=r"line 1, byte 0\)"):
        lines("재밌다\n".encode("cp949"))


def test_unreadable_stream_is_a_pipeline_error():
    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise OSError(5, "Input/output error")

    with pytest.raises(PipelineError, match=r"^cannot read standard input: Input/output error$"):
        read_lines(Broken(), "standard input")


# --- plain output -----------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")


def unescape(column: str) -> str:
    """The inverse of format_plain's TEXT column, as documented in its docstring."""
    if column == "<empty>":
        return ""
    named = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    return _ESCAPE.sub(lambda m: named.get(m[1]) or chr(int(m[1][1:], 16)), column)


def plain(text: str, label: int = 1, probability: float = 0.93456) -> str:
    return format_plain({"text": text, "label": label, "sentiment": "", "probability": probability, "empty": False})


def test_format_plain_columns_and_escapes():
    assert plain("최고의 영화") == "긍정\t0.9346\t최고의 영화"
    assert plain("", label=0, probability=0.5) == "부정\t0.5000\t<empty>"
    assert plain("<empty>").endswith("\t\\x3cempty>")
    assert plain("a\tb\nc\r\nd\\e") == "긍정\t0.9346\ta\\tb\\nc\\r\\nd\\\\e"
    assert plain("x\u2028y\u2029z\x0b\x0c\x1c\x85\x1b[31m") == \
        "긍정\t0.9346\tx\\u2028y\\u2029z\\x0b\\x0c\\x1c\\x85\\x1b[31m"
    assert plain(r"literal \n stays literal").endswith(r"literal \\n stays literal")
    # a review whose tokens the model does not know says so in a fourth column
    unknown = format_plain({"text": "good game", "label": 1, "sentiment": "", "probability": 0.5053, "empty": False,
                            "unknown": True})
    assert unknown == "긍정\t0.5053\tgood game\t(no known token)"


@given(st.text())
def test_format_plain_is_one_line_and_round_trips(text):
    line = plain(text)
    assert len(line.splitlines()) == 1 and not line.endswith(("\n", "\r"))
    word, probability, column = line.split("\t")
    assert (word, probability) == ("긍정", "0.9346")
    assert unescape(column) == text


# --- standard input, through a real process ---------------------------------------------------

def python_shell(code: str, redirect: str) -> subprocess.CompletedProcess:
    """Run `python -c code` under bash with a redirection such as `<&-` (stdin closed)."""
    command = f"{_quote(sys.executable)} -c {_quote(code)} {redirect}"
    return subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


READ_STDIN = """
from pipeline.errors import PipelineError
from pipeline.predict.lines import read_lines, read_path_lines, stdin_stream
for read in (lambda: read_lines(stdin_stream(), "standard input"), lambda: read_path_lines("-")):
    try:
        print(read())
    except PipelineError as exc:
        print("error:", exc)
"""


def test_closed_stdin_is_a_clear_error():
    result = python_shell(READ_STDIN, "<&-")
    message = "error: standard input is closed; give reviews as arguments or with --file\n"
    assert result.returncode == 0, result.stderr
    assert result.stdout == message * 2 and result.stderr == ""


def test_write_only_stdin_is_a_clear_error():
    result = python_shell(READ_STDIN, "0>/dev/null")
    assert result.stdout == "error: cannot read standard input: Bad file descriptor\n" * 2, result.stderr


def test_stdin_lines():
    result = python_shell(READ_STDIN, "< <(printf '\\xef\\xbb\\xbf\\xea\\xb0\\x80\\xe2\\x80\\xa8\\r\\n\\n')")
    assert result.stdout.splitlines()[0] == "['가\\u2028', '']", result.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match=r"^cannot read .*missing.txt: No such file or directory$"):
        read_path_lines(str(tmp_path / "missing.txt"))


# --- quiet start-up ---------------------------------------------------------------------------

FAKE_KERAS = """
import os, sys
os.write(2, b"native start-up noise\\n")
print("python-level noise", file=sys.stderr)
if os.environ.get("FAKE_KERAS_FAIL"):
    raise ImportError("fake keras is broken")
"""
IMPORT = "from pipeline.core import quiet; keras = quiet.import_keras(); print('imported', keras.__name__)"


@pytest.fixture
def fake_keras(tmp_path):
    """A `keras` that writes to fd 2 like TensorFlow's native code, put ahead of the real one."""
    (tmp_path / "keras.py").write_text(FAKE_KERAS)
    return str(tmp_path)


def test_fake_keras_noise_is_silenced(fake_keras):
    result = python(IMPORT + "; import sys; print('after', file=sys.stderr)", {"KSENT_VERBOSE": None}, fake_keras)
    assert result.returncode == 0 and result.stdout == "imported keras\n"
    assert result.stderr == "after\n"   # fd 2 is restored after the import


@pytest.mark.parametrize("value", ["1", "true"])
def test_fake_keras_noise_shows_when_verbose(fake_keras, value):
    result = python(IMPORT, {"KSENT_VERBOSE": value}, fake_keras)
    assert result.returncode == 0
    assert result.stderr == "native start-up noise\npython-level noise\n"


def test_failed_import_replays_what_it_wrote(fake_keras):
    result = python(IMPORT, {"KSENT_VERBOSE": "0", "FAKE_KERAS_FAIL": "1"}, fake_keras)
    assert result.returncode == 1
    assert result.stderr.startswith("native start-up noise\npython-level noise\nTraceback")
    assert result.stderr.endswith("ImportError: fake keras is broken\n")


LEVEL = ("from pipeline.core import quiet; quiet.default_log_level(); {verbose} quiet.import_keras(); "
         "import os; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")


@pytest.mark.parametrize("user_level, verbose, expected", [
    (None, "", "3"),                          # quiet: TensorFlow's native logs off
    ("0", "", "3"),                           # quiet wins over a level set for other tools
    (None, "quiet.set_verbose();", "None"),   # --verbose takes back ksent's own default
    ("1", "quiet.set_verbose();", "1"),       # ... but not the user's
])
def test_tf_log_level(fake_keras, user_level, verbose, expected):
    result = python(LEVEL.format(verbose=verbose), {"KSENT_VERBOSE": None, "TF_CPP_MIN_LOG_LEVEL": user_level},
                    fake_keras)
    assert result.stdout == f"{expected}\n", result.stderr


ALLOCATOR = ("from pipeline.core import quiet; quiet.import_keras({quiet}); "
             "import os; print(os.environ.get('TF_CPU_ALLOCATOR_USE_BFC'))")


@pytest.mark.parametrize("user_value, quiet, expected", [
    (None, "", "true"),            # TensorFlow's pooling CPU allocator by default ...
    (None, "quiet=False", "true"),  # ... verbose or not
    ("false", "", "false"),        # the user's choice stands
])
def test_tensorflows_cpu_allocator_is_the_pooling_one_unless_the_user_chose(fake_keras, user_value, quiet, expected):
    result = python(ALLOCATOR.format(quiet=quiet), {"KSENT_VERBOSE": None, "TF_CPU_ALLOCATOR_USE_BFC": user_value},
                    fake_keras)
    assert result.stdout == f"{expected}\n", result.stderr


TINY_MODEL = """
import numpy as np
from pipeline.core.quiet import import_keras
keras = import_keras()
inputs = keras.Input(shape=(None,), dtype="int32")
x = keras.layers.LSTM(4)(keras.layers.Embedding(50, 8, mask_zero=True)(inputs))
model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
model.save("{path}")
model = keras.saving.load_model("{path}", compile=False)
print(model.predict_on_batch(np.array([[1, 2, 3], [0, 0, 4]], dtype="int32")).shape)
import os
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""


def test_real_tensorflow_is_silent_from_import_to_first_predict_unless_verbose(tmp_path):
    code = TINY_MODEL.format(path=tmp_path / "tiny.keras")
    quiet = python(code, {"KSENT_VERBOSE": None, "TF_CPP_MIN_LOG_LEVEL": None})
    assert quiet.returncode == 0 and quiet.stdout == "(2, 1)\n3\n"     # TensorFlow's own log level raised
    assert quiet.stderr == ""
    loud = python(code, {"KSENT_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": None})
    # left to TensorFlow: what it says at start-up reaches stderr (some builds say nothing; the fake keras
    # tests above show the redirection itself on every machine)
    assert loud.returncode == 0 and loud.stdout == "(2, 1)\nNone\n"


# --- lines before a bad one, and lines longer than the model reads ---------------------------------------

def test_the_lines_before_a_bad_one_are_answered_then_the_error(evaluated, tmp_path):
    bundle_dir, _ = evaluated
    bad = tmp_path / "reviews.txt"
    bad.write_bytes("좋아요\n최악\n".encode() + b"\xb0\xa1\xff\n" + "재밌다\n".encode())
    for source in (["--file", str(bad)], ["--file", "-"]):
        run = ksent("predict", "--model", str(bundle_dir), *source,
                    stdin=bad.read_bytes() if source[1] == "-" else None)
        assert run.returncode == 1
        assert [line.split("\t")[2] for line in run.stdout.decode().splitlines()] == ["좋아요", "최악"]
        assert "not valid UTF-8 (line 3, byte " in run.stderr.decode()
    # the same in the middle of a batch of thousands (the unfinished batch used to be lost)
    many = tmp_path / "many.txt"
    many.write_bytes("좋아요\n".encode() * 10_000 + b"\xff\n")
    run = ksent("predict", "--model", str(bundle_dir), "--file", str(many))
    assert run.returncode == 1 and len(run.stdout.decode().splitlines()) == 10_000
    assert "line 10001" in run.stderr.decode()


class Endless(io.RawIOBase):
    """`size` bytes of one repeated byte and no newline, like /dev/zero."""

    def __init__(self, size: int, byte: bytes = b"\0"):
        self.left, self.byte = size, byte

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = self.byte * n
        self.left -= n
        return n


def test_a_line_is_cut_while_it_is_read_so_memory_stays_bounded():
    import tracemalloc

    from pipeline.predict.lines import KEEP_BYTES, MAX_CHARS

    tracemalloc.start()
    [line] = iter_lines(io.BufferedReader(Endless(200 * 2**20)), "zeros")     # 200 MB, no newline
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 2**20, peak                                               # not 200 MB
    assert len(line) == 2 * KEEP_BYTES
    # what the model reads of a long line is unchanged: its first and its last MAX_CHARS characters
    text = "시작" + "가나다라" * 50_000 + "끝났다 재밌다"
    [cut] = read_lines(io.BytesIO((text + "\n" + text).encode()), "long")[:1]
    assert cut[:MAX_CHARS] == text[:MAX_CHARS] and cut[-MAX_CHARS:] == text[-MAX_CHARS:]
    assert len(cut) < len(text) and read_lines(io.BytesIO((text + "\n" + text).encode()), "long")[1] == cut


def test_predict_on_dev_zero_stays_within_bounded_memory(evaluated):
    """An input with no newline, read through the real entry point: memory stays flat (it grew ~500 MB/s)."""
    import psutil

    bundle_dir, _ = evaluated
    run = subprocess.Popen([sys.executable, "-m", "pipeline", "predict", "--model", str(bundle_dir), "--file",
                            "/dev/zero"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(6)
        assert run.poll() is None, run.stderr.read()
        rss = psutil.Process(run.pid).memory_info().rss
    finally:
        run.kill()
        run.wait(timeout=30)
    assert rss < 800 * 2**20, f"{rss / 2**20:.0f} MB after 6 s of /dev/zero"


def test_escape_rewrites_exactly_the_documented_characters():
    # every code point: escaped iff a backslash, a control character (Cc) or U+2028/U+2029 (Zl, Zp)
    import unicodedata

    from pipeline.predict.lines import escape

    for cp in range(0x110000):
        char = chr(cp)
        special = char == "\\" or unicodedata.category(char) in ("Cc", "Zl", "Zp")
        assert (escape("a" + char) != "a" + char) == special, hex(cp)
