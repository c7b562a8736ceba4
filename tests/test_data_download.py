"""Downloads against a local HTTP server: traversal probes, If-Range resume, stale and oversize parts,
early close, checksums, the pinned msa_segtrack / EMPS manifests, offline, CLI."""
import argparse
import csv
import hashlib
import http.server
import io
import socket
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emlib.cli import main
from emlib.data import download as dl
from emlib.data import manifests
from emlib.data.cli import add_cli

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real/nanoparticles"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real is absent")

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB
NEWER = bytes(reversed(PAYLOAD))  # the same file name, changed on the server
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files`; ETag = hash of the content. Knobs: ranges, If-Range, length header, early close."""
    files = {}
    requests = []
    honour_ranges = honour_if_range = send_length = True
    cut_after = None  # send only this many body bytes, then close

    def do_GET(self):
        Handler.requests.append((self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        body = Handler.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        if_range = self.headers.get("If-Range")
        use_range = self.honour_ranges and self.headers.get("Range") and (
            not self.honour_if_range or if_range in (None, etag))
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if use_range else 0
        if use_range and start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if use_range else 200)
        if use_range:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("ETag", etag)
        if self.send_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        try:
            self.wfile.write(body[start:][:self.cut_after])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: a size it did not expect

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.files = {
        "/data/a.bin": PAYLOAD,
        "/data/sub/b.bin": PAYLOAD[:1000],
        "/data/": b'<a href="../">up</a> <a href="?C=N">sort</a> <a href="a.bin">a</a> <a href="sub/">sub</a>',
        "/data/sub/": b'<a href="/">root</a> <a href="/data/">parent</a> <a href="b.bin">b</a>',
    }
    Handler.requests, Handler.cut_after = [], None
    Handler.honour_ranges = Handler.honour_if_range = Handler.send_length = True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def interrupted(url, dest, after, **kwargs):
    """Start a download that the server cuts after `after` bytes; leaves dest.part (and its record)."""
    Handler.cut_after = after
    with pytest.raises(dl.DownloadError, match=f"got {after} of"):
        dl.download_file(url, dest, progress=False, **kwargs)
    Handler.cut_after = None
    assert dest.with_name(dest.name + ".part").stat().st_size == after


def all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- path traversal

def test_listing_links_outside_the_listing_or_the_output_folder_are_skipped(server, tmp_path, monkeypatch):
    Handler.files["/evil/"] = (b'<a href="%2e%2e/%2e%2e/x.bin">1</a> <a href="sub%2f..%2f..%2fx.bin">2</a> '
                               b'<a href="./../../y/z.bin">3</a> <a href="http://elsewhere.invalid/w.bin">4</a> '
                               b'<a href="ok.bin">5</a>')
    for path in ["/evil/%2e%2e/%2e%2e/x.bin", "/evil/sub%2f..%2f..%2fx.bin", "/y/z.bin", "/evil/ok.bin"]:
        Handler.files[path] = b"pwned" if "ok" not in path else b"fine"
    monkeypatch.setitem(dl.SOURCES, "cem500k", dict(page="test", listing=f"{server}/evil/"))
    out = tmp_path / "one" / "two" / "out"
    with pytest.warns(dl.DownloadWarning) as caught:
        dl.download("cem500k", out, progress=False)
    assert all_files(tmp_path) == ["one/two/out/ok.bin"]
    assert [r[0] for r in Handler.requests] == ["/evil/", "/evil/ok.bin"]  # nothing fetched outside the listing
    assert len(caught) == 4 and all("skipped" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", ["../x.bin", "a/../../x.bin", "/tmp/x.bin", "a/./b", "a\\..\\x", "", "a//b"])
def test_a_file_table_entry_that_leaves_the_output_folder_is_refused(server, tmp_path, monkeypatch, name):
    monkeypatch.setitem(dl.SOURCES, "au-groschner", dict(page="test", files={name: f"{server}/data/sub/b.bin"}))
    with pytest.raises(dl.DownloadError, match="outside"):
        dl.download("au-groschner", tmp_path / "out", progress=False)
    assert all_files(tmp_path) == [] and Handler.requests == []


# ----------------------------------------------------------------------------- resume and verification

def test_an_interrupted_download_resumes_only_with_if_range(server, tmp_path):
    url, dest = f"{server}/data/a.bin", tmp_path / "a.bin"
    interrupted(url, dest, 300_000)
    assert dl.download_file(url, dest, sha256=SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and all_files(tmp_path) == ["a.bin"]  # no .part, no record left
    etag = f'"{SHA[:16]}"'
    assert Handler.requests[-1] == ("/data/a.bin", "bytes=300000-", etag)
    dl.download_file(url, dest, progress=False)  # present: no request
    assert len(Handler.requests) == 2


@pytest.mark.parametrize("honour_if_range", [True, False], ids=["if-range-server", "range-only-server"])
def test_a_stale_part_of_a_changed_file_is_not_joined(server, tmp_path, honour_if_range):
    url, dest = f"{server}/data/a.bin", tmp_path / "a.bin"
    interrupted(url, dest, 300_000)
    Handler.files["/data/a.bin"], Handler.honour_if_range = NEWER, honour_if_range
    dl.download_file(url, dest, progress=False)
    assert dest.read_bytes() == NEWER


def test_a_part_without_its_record_or_with_ranges_ignored_starts_over(server, tmp_path):
    (tmp_path / "a.bin.part").write_bytes(NEWER[:300_000])  # e.g. left by an older emlib: origin unknown
    dl.download_file(f"{server}/data/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD and Handler.requests[-1][1] is None
    interrupted(f"{server}/data/a.bin", tmp_path / "c.bin", 300_000)
    Handler.honour_ranges = False
    dl.download_file(f"{server}/data/a.bin", tmp_path / "c.bin", progress=False)
    assert (tmp_path / "c.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize("cut", [600_000, 500_000], ids=["longer-part", "same-length-part"])
def test_416_is_not_taken_as_done_without_checking(server, tmp_path, cut):
    url, dest = f"{server}/data/a.bin", tmp_path / "a.bin"
    interrupted(url, dest, cut)
    shorter = NEWER[:500_000]
    Handler.files["/data/a.bin"], Handler.honour_if_range = shorter, False  # 416 to the range request
    dl.download_file(url, dest, progress=False)
    assert dest.read_bytes() == shorter
    assert [r[1] for r in Handler.requests[-2:]] == [f"bytes={cut}-", None]


def test_a_complete_part_finishes_on_416_after_size_and_hash_checks(server, tmp_path):
    url, dest = f"{server}/data/a.bin", tmp_path / "a.bin"
    interrupted(url, dest, len(PAYLOAD) - 1000)
    with open(tmp_path / "a.bin.part", "ab") as f:
        f.write(PAYLOAD[-1000:])
    dl.download_file(url, dest, size=len(PAYLOAD), sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and Handler.requests[-1][1] == f"bytes={len(PAYLOAD)}-"


def test_an_early_close_without_length_is_not_accepted(server, tmp_path):
    Handler.send_length, Handler.cut_after = False, 300_000
    url = f"{server}/data/a.bin"
    with pytest.raises(dl.DownloadError, match=f"got 300000 of {len(PAYLOAD)} bytes"):
        dl.download_file(url, tmp_path / "a.bin", size=len(PAYLOAD), progress=False)
    with pytest.raises(dl.DownloadError, match="checksum mismatch for b.bin"):
        dl.download_file(url, tmp_path / "b.bin", sha256=SHA, progress=False)
    with pytest.warns(dl.DownloadWarning, match="no length and no checksum.*c.bin"):
        dl.download_file(url, tmp_path / "c.bin", progress=False)
    assert all_files(tmp_path) == ["a.bin.part", "a.bin.part.json", "c.bin"]


def test_a_checksum_or_size_mismatch_is_reported_and_cleaned(server, tmp_path):
    url = f"{server}/data/a.bin"
    with pytest.raises(dl.DownloadError, match="checksum mismatch for a.bin"):
        dl.download_file(url, tmp_path / "a.bin", sha256="0" * 64, progress=False)
    with pytest.raises(dl.DownloadError, match=f"announces {len(PAYLOAD)} bytes.*has 5"):
        dl.download_file(url, tmp_path / "a.bin", size=5, progress=False)
    assert all_files(tmp_path) == []
    (tmp_path / "a.bin").write_bytes(PAYLOAD[:10])
    with pytest.raises(dl.DownloadError, match="exists with 10 bytes"):
        dl.download_file(url, tmp_path / "a.bin", size=len(PAYLOAD), progress=False)


def test_directory_listing_and_dataset_download(server, tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # navigation links (parent, root, sort) are not worth a warning
        listing = dl.list_directory(f"{server}/data/")
    assert listing == {"a.bin": f"{server}/data/a.bin", "sub/b.bin": f"{server}/data/sub/b.bin"}
    assert [r[0] for r in Handler.requests] == ["/data/", "/data/sub/"]  # the parent listing is not read again
    monkeypatch.setitem(dl.SOURCES, "cem500k", dict(page="test", listing=f"{server}/data/"))
    paths = dl.download("cem500k", tmp_path, progress=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == ["a.bin", "sub/b.bin"]
    with pytest.raises(ValueError, match="unknown dataset"):
        dl.download("imagenet", tmp_path)


# ----------------------------------------------------------------------------- msa_segtrack and EMPS

def test_manifests_are_pinned_and_complete():
    for name, count in [("msa_segtrack", 80), ("emps", 933)]:
        manifest, spec = manifests.load(name), manifests.PINNED[name]
        assert (manifest["repository"], manifest["commit"]) == (spec["repository"], spec["commit"])
        assert len(manifest["commit"]) == 40 and len(manifest["files"]) == count
        assert all(size > 0 and len(sha) == 64 for size, sha in manifest["files"].values())
    urls = [url for url, _, _ in dl.files_of("emps").values()]
    assert urls[0].startswith("https://raw.githubusercontent.com/by256/emps/dd8f86d714894fd08f3db80041893982ce058dd6/")


@needs_real
def test_manifests_match_the_shared_copies():
    """msa_segtrack, EMPS segmaps and split lists are byte-identical to the published files; EMPS images are grey
    conversions, so only their names can be compared."""
    for name in ("msa_segtrack", "emps"):
        files, layout = manifests.load(name)["files"], dl.SOURCES[name].get("layout", lambda p: (p, None))
        for path, (size, sha) in files.items():
            if layout(path)[1] is None:  # written as published
                assert (REAL / name / path).stat().st_size == size and dl.sha256_of(REAL / name / path) == sha, path
        assert sorted(layout(p)[0] for p in files) == all_files(REAL / name)


def served_manifest(monkeypatch, server, name, files):
    """Serve files ({published path: bytes}) as GitHub raw at the pinned commit, with a manifest of just them."""
    manifest = dict(manifests.load(name), files={})
    for path, body in files.items():
        Handler.files[f"/{manifest['repository']}/{manifest['commit']}/{manifest['prefix']}{path}"] = body
        manifest["files"][path] = [len(body), hashlib.sha256(body).hexdigest()]
    monkeypatch.setattr(dl, "GITHUB_RAW", server + "/{repository}/{commit}/{prefix}")
    monkeypatch.setattr(dl.manifests, "load", lambda _: manifest)
    return manifest


@needs_real
def test_msa_segtrack_is_downloaded_in_the_shared_layout(server, tmp_path, monkeypatch, capsys):
    picked = ["train/images/image_0.png", "train/labels/label_0.png", "test/images/image_3.png",
              "test/labels/label_3.png"]
    published = manifests.load("msa_segtrack")["files"]
    manifest = served_manifest(monkeypatch, server, "msa_segtrack", {p: (REAL / "msa_segtrack" / p).read_bytes()
                                                                     for p in picked})
    assert all(manifest["files"][p] == published[p] for p in picked)  # the shared copies are the published bytes
    out = tmp_path / "msa_segtrack"
    assert main(["data", "download", "msa_segtrack", "--out", str(out)]) == 0
    assert "4 file(s) of msa_segtrack" in capsys.readouterr().out and all_files(out) == sorted(picked)
    assert all((out / p).read_bytes() == (REAL / "msa_segtrack" / p).read_bytes() for p in picked)
    (out / picked[0]).write_bytes(b"truncated")
    with pytest.raises(dl.DownloadError, match="exists with 9 bytes"):
        dl.download("msa_segtrack", out, progress=False)
    served = next(k for k in Handler.files if k.endswith(picked[1]))
    Handler.files[served] = Handler.files[served][:-1] + b"?"  # same size, other bytes
    (out / picked[0]).unlink()
    (out / picked[1]).unlink()
    with pytest.raises(dl.DownloadError, match="checksum mismatch for label_0.png"):
        dl.download("msa_segtrack", out, progress=False)
    assert all_files(out) == sorted(picked[:1] + picked[2:])


def rgb_png(grey_path):
    """The shared grey EMPS image as the RGB PNG the repository publishes (three equal channels)."""
    grey = np.asarray(Image.open(grey_path))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(buffer, format="PNG")
    return buffer.getvalue()


def emps_metadata():
    """A metadata.csv with the published columns, made from the shared sources.csv."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["filename", "doi", "locator", "regions"])
    with open(REAL / "emps/sources.csv", newline="") as f:
        for row in csv.DictReader(f):
            writer.writerow([row["filename"], row["doi"], row["figure"], "[{'shape_attributes': {}}]"])
    return buffer.getvalue().encode()


@needs_real
def test_emps_is_downloaded_converted_and_verified(server, tmp_path, monkeypatch):
    ids = (REAL / "emps/train.csv").read_text().split()[:1] + (REAL / "emps/test.csv").read_text().split()[:1]
    files = {f"images/{i}.png": rgb_png(REAL / f"emps/images/{i}.png") for i in ids}
    files |= {f"segmaps/{i}.png": (REAL / f"emps/segmaps/{i}.png").read_bytes() for i in ids}
    files |= {"train.csv": (REAL / "emps/train.csv").read_bytes(), "metadata.csv": emps_metadata()}
    published = manifests.load("emps")["files"]
    served_manifest(monkeypatch, server, "emps", files)
    out = tmp_path / "emps"
    dl.download("emps", out, progress=False)
    assert all_files(out) == sorted([p for p in files if p != "metadata.csv"] + ["sources.csv"])  # nothing left over
    for i in ids:
        with Image.open(out / f"images/{i}.png") as got, Image.open(REAL / f"emps/images/{i}.png") as want:
            assert got.mode == "L" and np.array_equal(np.asarray(got), np.asarray(want))
        assert dl.sha256_of(out / f"segmaps/{i}.png") == published[f"segmaps/{i}.png"][1]
    assert (out / "sources.csv").read_bytes() == (REAL / "emps/sources.csv").read_bytes()
    assert (out / "train.csv").read_bytes() == (REAL / "emps/train.csv").read_bytes()


def test_an_rgb_image_with_unequal_channels_is_not_converted(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 2] = 9
    Image.fromarray(colour).save(tmp_path / "in.png")
    with pytest.raises(dl.DownloadError, match="in.png: colour channels differ"):
        dl.convert_rgb_to_grey(tmp_path / "in.png", tmp_path / "out.png")
    assert all_files(tmp_path) == ["in.png"]


# ----------------------------------------------------------------------------- offline, registry, CLI

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
    assert err.startswith("error: ") and "offline" in err and err.count("\n") == 1


def test_sources_cover_the_papers_and_the_nanoparticle_datasets():
    assert set(dl.SOURCES) == {"cem500k", "au-sytwu", "au-groschner", "temimagenet", "msa_segtrack", "emps"}
    assert len(dl.SOURCES["au-sytwu"]["files"]) == 8
    assert all("zenodo.org/records/6419024" in u for u in dl.SOURCES["au-sytwu"]["files"].values())
    assert "10592" in dl.SOURCES["cem500k"]["listing"]


def test_cli_synth_writes_the_synthetic_tree(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "syn"), "--scale", "tiny"]) == 0
    assert {p.name for p in (tmp_path / "syn").iterdir()} >= {"cem500k", "au", "temimagenet"}
    assert "tiny" in capsys.readouterr().out


def test_every_dataset_row_names_a_download_recipe_and_its_paper_table():
    from emlib.data import download
    from emlib.data.registry import DATASETS

    for row in DATASETS.values():
        assert row.download is None or row.download in download.SOURCES, row.name
    assert {name: row.paper_table for name, row in DATASETS.items() if row.paper_table} == {
        "Au5nmV1": 2, "Au2.2nm": 3, "Au5nm": 4, "Au10nm": 5, "Au20nm": 6, "TEMImageNet": 7}  # the paper's Tables 2-7
