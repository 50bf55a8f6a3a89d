"""download stage against a local HTTP server started by the test, and a file:// mirror."""
from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline import corpora
from pipeline.errors import PipelineError
from pipeline.stages.download import ChecksumError, DownloadError, download, source_url


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        mode, _, rest = self.path.lstrip("/").partition("/")
        self.hits[mode] = self.hits.get(mode, 0) + 1
        body = self.files.get(rest.split("/", 1)[-1])
        if body is None or mode == "missing":
            self.send_error(404, "Not Found")
            return
        if mode == "corrupt":
            body = body[:10] + bytes([body[10] ^ 1]) + body[11:]
        if mode == "flaky" and self.hits[mode] == 1:
            self.send_error(503, "Service Unavailable")
            return
        self.send_response(200)
        if mode == "trickle":     # the length announced, then a byte every 0.2 s (for 4 s, then it hangs up)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                for i in range(20):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)
            return
        if mode == "cut":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "endless":       # no length, and the bytes never stop (a bounded 64 MB here)
            self.end_headers()
            try:
                self.wfile.write(body)
                for _ in range(1000):
                    self.wfile.write(b"x" * 65536)
                    self.sent = getattr(self, "sent", 0) + 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
            _Handler.endless_sent = getattr(self, "sent", 0)
            return
        self.send_header("Content-Length", str(len(body) * (1000 if mode == "liar" else 1)))
        self.end_headers()
        if mode == "drop":  # promise the whole file, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server(tiny_corpus):
    _Handler.files = {p.name: p.read_bytes() for p in (tiny_corpus / "tiny").iterdir()}
    _Handler.hits = {}
    _Handler.endless_sent = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _raw_files(data_dir):
    folder = data_dir / "raw" / "tiny"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _quiet(line):
    pass


def test_good_mirror_downloads_and_verifies(server, tmp_path, tiny_corpus):
    result = download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/good", backoff=0, echo=_quiet)
    assert result.counts == {"fetched": 2, "kept": 0}
    raw = tmp_path / "d" / "raw" / "tiny"
    for name in ("ratings_train.txt", "ratings_test.txt"):
        assert (raw / name).read_bytes() == (tiny_corpus / "tiny" / name).read_bytes()
    assert _raw_files(tmp_path / "d") == ["download.manifest.json", "ratings_test.txt", "ratings_train.txt"]


def test_verified_file_is_not_downloaded_again(server, tmp_path):
    download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/good", echo=_quiet)
    hits = _Handler.hits["good"]
    again = download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/good", echo=_quiet)
    assert again.skipped and _Handler.hits["good"] == hits


def test_corrupted_file_fails_with_checksum_message_and_leaves_nothing(server, tmp_path):
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/corrupt", backoff=0, echo=_quiet)
    assert _raw_files(tmp_path / "d") == []


def test_404_fails_at_once_without_retrying(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/missing", backoff=0, echo=_quiet)
    assert _Handler.hits["missing"] == 1
    assert _raw_files(tmp_path / "d") == []


def test_connection_dropped_mid_file_is_retried_then_reported(server, tmp_path):
    lines = []
    with pytest.raises(DownloadError, match="connection dropped"):
        download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/drop", retries=2, backoff=0, echo=lines.append)
    assert _Handler.hits["drop"] == 3
    assert sum("retrying" in line for line in lines) == 2
    assert _raw_files(tmp_path / "d") == []


def test_transient_error_then_success(server, tmp_path):
    lines = []
    result = download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/flaky", backoff=0, echo=lines.append)
    assert result.counts["fetched"] == 2
    assert any("HTTP 503" in line and "retrying" in line for line in lines)


def test_refused_connection(tmp_path, tiny_corpus):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="giving up after 2 attempts"):
        download("tiny", data_dir=tmp_path / "d", mirror=f"http://127.0.0.1:{port}", retries=1, backoff=0,
                 timeout=2, echo=_quiet)
    assert _raw_files(tmp_path / "d") == []


def test_file_url_and_folder_mirrors(tmp_path, tiny_corpus):
    as_url = download("tiny", data_dir=tmp_path / "a", mirror=tiny_corpus.as_uri(), echo=_quiet)
    as_folder = download("tiny", data_dir=tmp_path / "b", mirror=str(tiny_corpus), echo=_quiet)
    assert as_url.counts["fetched"] == as_folder.counts["fetched"] == 2


def test_missing_file_in_folder_mirror(tmp_path, tiny_corpus):
    (tiny_corpus / "tiny" / "ratings_test.txt").unlink()
    with pytest.raises(DownloadError, match="not found"):
        download("tiny", data_dir=tmp_path / "d", mirror=str(tiny_corpus), echo=_quiet)
    assert "ratings_test.txt" not in _raw_files(tmp_path / "d")


def test_existing_corrupt_file_is_replaced(tmp_path, tiny_corpus):
    target = tmp_path / "d" / "raw" / "tiny" / "ratings_train.txt"
    target.parent.mkdir(parents=True)
    target.write_text("stale\n")
    download("tiny", data_dir=tmp_path / "d", mirror=str(tiny_corpus), echo=_quiet)
    assert target.read_bytes() == (tiny_corpus / "tiny" / "ratings_train.txt").read_bytes()


def test_source_url_layout(tiny_corpus):
    from pipeline.corpora import CORPORA
    spec = CORPORA["nsmc"].files[0]
    assert source_url(spec, "nsmc", None) == spec.url
    assert source_url(spec, "nsmc", "http://h:8000/m/") == "http://h:8000/m/nsmc/ratings_train.txt"
    assert source_url(spec, "nsmc", "/srv/m").startswith("file:///srv/m/nsmc/ratings_train.txt")


def test_an_http_mirror_without_the_optional_unlabeled_file_gives_a_note(server, tmp_path, monkeypatch):
    spec = corpora.CORPORA["tiny"]
    monkeypatch.setitem(corpora.CORPORA, "tiny", dataclasses.replace(spec, unlabeled=corpora.CorpusFile(
        "reviews.txt.gz", "", "unlabeled", sha256="0" * 64, mirror_folder="tiny_unlabeled")))
    lines: list[str] = []
    result = download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/good", backoff=0, echo=lines.append)
    assert result.counts == {"fetched": 2, "kept": 0}
    assert "the mirror has no unlabeled reviews (HTTP 404" in lines[-1]
    assert _raw_files(tmp_path / "d") == ["download.manifest.json", "ratings_test.txt", "ratings_train.txt"]
    with pytest.raises(DownloadError, match="HTTP 404"):                  # a required file: still an error
        download("tiny", data_dir=tmp_path / "e", mirror=f"{server}/missing", backoff=0, echo=_quiet)


def test_a_stream_longer_than_the_pinned_size_stops_at_once(server, tmp_path, tiny_corpus):
    size = (tiny_corpus / "tiny" / "ratings_train.txt").stat().st_size
    with pytest.raises(DownloadError, match=f"more than the {size:,} bytes expected"):
        download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/endless", backoff=0, echo=_quiet)
    assert _raw_files(tmp_path / "d") == []
    deadline = time.monotonic() + 10
    while _Handler.endless_sent is None and time.monotonic() < deadline:   # the server's write fails soon after
        time.sleep(0.05)
    assert _Handler.endless_sent is not None and _Handler.endless_sent < 40 * 2**20   # not the server's 64 MB
    with pytest.raises(DownloadError, match="the server announces .* bytes, more than the .* expected"):
        download("tiny", data_dir=tmp_path / "e", mirror=f"{server}/liar", backoff=0, echo=_quiet)
    assert _Handler.hits["liar"] == 1 and _raw_files(tmp_path / "e") == []


def test_an_unpinned_remote_file_is_recorded_at_first_download_and_enforced_after(server, tmp_path, monkeypatch):
    spec = corpora.CORPORA["tiny"]
    unpinned = tuple(dataclasses.replace(f, url=f"{server}/good/tiny/{f.name}", sha256=None, size=None)
                     for f in spec.files)
    monkeypatch.setitem(corpora.CORPORA, "tiny", dataclasses.replace(spec, files=unpinned))
    download("tiny", data_dir=tmp_path / "d", echo=_quiet)
    raw = tmp_path / "d" / "raw" / "tiny"
    first = (raw / "ratings_train.txt").read_bytes()
    assert set((raw / "checksums.json").read_text().split('"')) >= {"ratings_train.txt", "ratings_test.txt"}
    _Handler.files["ratings_train.txt"] += b"9999\tnew\t1\n"      # the server's file changes under the same URL
    with pytest.raises(ChecksumError, match=rf"recorded at its first download.*delete {raw / 'checksums.json'}\)"):
        download("tiny", data_dir=tmp_path / "d", force=True, backoff=0, echo=_quiet)
    assert (raw / "ratings_train.txt").read_bytes() == first        # the verified copy stays


def _unpinned(monkeypatch, server: str, mode: str, sized: bool) -> None:
    spec = corpora.CORPORA["tiny"]
    files = tuple(dataclasses.replace(f, url=f"{server}/{mode}/tiny/{f.name}", sha256=None,
                                      size=f.size if sized else None) for f in spec.files)
    monkeypatch.setitem(corpora.CORPORA, "tiny", dataclasses.replace(spec, files=files))


def test_a_download_shorter_than_its_declared_size_is_refused_and_nothing_is_pinned(server, tmp_path, monkeypatch):
    _unpinned(monkeypatch, server, "cut", sized=True)
    with pytest.raises(DownloadError, match=r"only [\d,]+ of the [\d,]+ bytes its declared size says arrived"):
        download("tiny", data_dir=tmp_path / "d", retries=1, backoff=0, echo=_quiet)
    assert _raw_files(tmp_path / "d") == []                        # no file, no checksums.json
    _unpinned(monkeypatch, server, "good", sized=True)
    assert download("tiny", data_dir=tmp_path / "d", echo=_quiet).counts["fetched"] == 2


def test_a_damaged_checksum_record_fails_closed(server, tmp_path, monkeypatch):
    from pipeline.stages.clean import clean

    _unpinned(monkeypatch, server, "good", sized=False)
    download("tiny", data_dir=tmp_path / "d", echo=_quiet)
    raw = tmp_path / "d" / "raw" / "tiny"
    (raw / "ratings_train.txt").write_bytes((raw / "ratings_train.txt").read_bytes() + b"1\tedited\t1\n")
    (raw / "checksums.json").write_text('{"ratings_train.txt": "nonsense')
    message = rf"{raw / 'checksums.json'} is damaged or unreadable.*`ksent download --corpus tiny --force`"
    with pytest.raises(PipelineError, match=message):
        clean("tiny", data_dir=tmp_path / "d", echo=_quiet)
    with pytest.raises(PipelineError, match=message):
        download("tiny", data_dir=tmp_path / "d", echo=_quiet)
    download("tiny", data_dir=tmp_path / "d", force=True, echo=_quiet)       # what the message says: rebuilt
    assert clean("tiny", data_dir=tmp_path / "d", echo=_quiet).counts["rows_out"] > 0


def test_a_source_that_trickles_is_given_up_at_its_deadline(server, tmp_path):
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"giving up after 1 attempts: only \d+ bytes arrived in 1 s "
                                            r"\(--deadline\)"):
        download("tiny", data_dir=tmp_path / "d", mirror=f"{server}/trickle", retries=0, deadline=1.0, echo=_quiet)
    assert time.monotonic() - started < 5 and _raw_files(tmp_path / "d") == []
