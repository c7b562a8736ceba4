"""Downloads against a local HTTP server: resume, restart, checksum, directory listing, offline, CLI."""
import argparse
import hashlib
import http.server
import socket
import threading

import pytest

from emlib.cli import main
from emlib.data import download as dl
from emlib.data.cli import add_cli

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB
FILES = {
    "/data/a.bin": PAYLOAD,
    "/data/sub/b.bin": PAYLOAD[:1000],
    "/data/": b'<a href="../">up</a> <a href="?C=N">sort</a> <a href="a.bin">a</a> <a href="sub/">sub</a>',
    "/data/sub/": b'<a href="/">root</a> <a href="b.bin">b</a>',
}


class Handler(http.server.BaseHTTPRequestHandler):
    honour_ranges = True
    requests = []

    def do_GET(self):
        Handler.requests.append((self.path, self.headers.get("Range")))
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.honour_ranges and self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.requests, Handler.honour_ranges = [], True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_resumes_from_a_partial_file(server, tmp_path):
    dest = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:300_000])
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert dl.download_file(f"{server}/data/a.bin", dest, sha256=sha, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "a.bin.part").exists()
    assert Handler.requests == [("/data/a.bin", "bytes=300000-")]
    dl.download_file(f"{server}/data/a.bin", dest, progress=False)  # present: no request
    assert len(Handler.requests) == 1


def test_restarts_when_ranges_are_ignored_and_finishes_a_complete_part(server, tmp_path):
    Handler.honour_ranges = False
    (tmp_path / "a.bin.part").write_bytes(b"garbage" * 10)
    dl.download_file(f"{server}/data/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    Handler.honour_ranges = True
    (tmp_path / "b.bin.part").write_bytes(PAYLOAD[:1000])  # complete already: the server answers 416
    dl.download_file(f"{server}/data/sub/b.bin", tmp_path / "b.bin", progress=False)
    assert (tmp_path / "b.bin").read_bytes() == PAYLOAD[:1000]


def test_checksum_mismatch_is_reported_and_cleaned(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="checksum mismatch.*a.bin"):
        dl.download_file(f"{server}/data/a.bin", tmp_path / "a.bin", sha256="0" * 64, progress=False)
    assert not list(tmp_path.iterdir())


def test_directory_listing_and_dataset_download(server, tmp_path, monkeypatch):
    assert dl.list_directory(f"{server}/data/") == [f"{server}/data/a.bin", f"{server}/data/sub/b.bin"]
    monkeypatch.setitem(dl.SOURCES, "cem500k", dict(page="test", listing=f"{server}/data/"))
    paths = dl.download("cem500k", tmp_path, progress=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == ["a.bin", "sub/b.bin"]
    with pytest.raises(ValueError, match="unknown dataset"):
        dl.download("imagenet", tmp_path)


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_gives_one_clear_line(tmp_path, monkeypatch, capsys):
    url = f"http://127.0.0.1:{closed_port()}/x.h5"
    with pytest.raises(dl.DownloadError, match="cannot reach.*offline"):
        dl.download_file(url, tmp_path / "x.h5", timeout=2, progress=False)
    monkeypatch.setitem(dl.SOURCES, "au-groschner", dict(page="https://zenodo", files={"x.h5": url}))
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())  # only the data command: no need to import the others
    args = parser.parse_args(["data", "download", "au-groschner", "--out", str(tmp_path), "--timeout", "2"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "offline" in err and "Traceback" not in err


def test_sources_cover_the_papers_datasets():
    assert set(dl.SOURCES) == {"cem500k", "au-sytwu", "au-groschner", "temimagenet"}
    assert len(dl.SOURCES["au-sytwu"]["files"]) == 8
    assert all("zenodo.org/records/6419024" in u for u in dl.SOURCES["au-sytwu"]["files"].values())
    assert "10592" in dl.SOURCES["cem500k"]["listing"]


def test_cli_synth_writes_the_synthetic_tree(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "syn"), "--scale", "tiny"]) == 0
    assert {p.name for p in (tmp_path / "syn").iterdir()} >= {"cem500k", "au", "temimagenet"}
    assert "tiny" in capsys.readouterr().out
