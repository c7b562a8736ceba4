"""Safe, verified, resumable downloads of the real datasets (not run on CI: the tests use a local server).

    python -m emlib data download emps --out data/real/nanoparticles/emps

`--out` is the dataset's folder: the files are written below it in the layout the
loaders read (for msa_segtrack and emps, the layout of `../shared/data/real/nanoparticles/<name>/`).

What a user can count on:
- Nothing is written outside `--out`. A file name that would leave it (absolute,
  `..`, also when percent-encoded as `%2e%2e` or `%2f`) is refused with a
  DownloadError. Directory listings are read only below their own URL: a link to
  a file elsewhere, or one whose decoded name is unsafe, is skipped with a
  DownloadWarning (links to folders above, such as `../`, are skipped silently).
- A file is fetched into `<name>.part`; the server's validator (a strong ETag,
  else Last-Modified) is remembered in `<name>.part.json`. A later run resumes
  with `Range` and `If-Range`, so the server sends the rest (206) only when the
  file is unchanged, and the whole new file (200) otherwise, which starts over. A
  `.part` without that record, of another URL, or longer than the file, is
  thrown away: a stale `.part` is never joined to a new file.
- A file is renamed into place only when complete: its size is the published
  size (from the manifest, else the server's announced length), and its SHA-256
  matches where one is known. HTTP 416 ("nothing left to send") passes the same
  checks. When the server sends no length and no size or hash is known, the file
  is kept with a DownloadWarning saying it could not be checked.
- Sizes and SHA-256 ship for msa_segtrack and emps (emlib/data/checksums/*.json,
  made by emlib.data.manifests) and are fetched from raw.githubusercontent.com at
  the pinned commit. None are known for cem500k, au-sytwu, au-groschner and
  temimagenet, which are checked against the server's lengths only.
- Without a network the command prints one line saying so, not a traceback.

Sources:
- cem500k: EMPIAR-10592 (Conrad & Narayan 2021), read from the EMPIAR directory listing
- au-sytwu: Zenodo 6419024 (Sytwu et al. 2022), four `<tag>_Images.h5` / `<tag>_Labels.h5` pairs
- au-groschner: Zenodo 3755011 (Groschner et al. 2021), the Au5nmV1 pair
- temimagenet: GitHub xinhuolin/TEM-ImageNet-v1.3 (Lin et al. 2021), the repository archive
- msa_segtrack: GitHub msa-em/microscopy-seg-track @ 657a8d1, notebooks/dataset/{train,test}/{images,labels}
- emps: GitHub by256/emps @ dd8f86d (Yildirim & Cole 2021): images/, segmaps/, train.csv, test.csv and
  sources.csv. The published images are RGB with three equal channels: each is checked against its
  published SHA-256, then written as 8-bit grey (lossless, as in ../shared); sources.csv (filename, doi,
  figure) is cut from the published metadata.csv, whose polygon column the segmaps already hold.
"""
import csv
import hashlib
import html
import http.client
import io
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from emlib import atomic
from emlib.data import manifests
from emlib.data.au import AU_DATASETS


class DownloadError(RuntimeError):
    """A download that cannot proceed (offline, server error, bad size or checksum); the message says why."""


class DownloadWarning(UserWarning):
    """Something skipped or not checkable during a download; the message says what."""


# ----------------------------------------------------------------------------- conversions on download

def convert_rgb_to_grey(published, dest):
    """Write the RGB (equal channels) or grey PNG `published` as an 8-bit grey PNG at dest."""
    with Image.open(published) as image:
        if image.mode not in ("RGB", "L"):
            raise DownloadError(f"{published}: mode {image.mode}, expected RGB or L; not converted")
        pixels = np.asarray(image)
    if pixels.ndim == 3:
        if not ((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()):
            raise DownloadError(f"{published}: colour channels differ, so it is not a grey image; not converted")
        pixels = pixels[..., 0]
    atomic.atomic_write(dest, lambda f: Image.fromarray(pixels).save(f, format="PNG"))


def convert_metadata_to_sources(published, dest):
    """Write EMPS's metadata.csv as sources.csv: filename, doi, figure (the published `locator`)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["filename", "doi", "figure"])
    with open(published, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            writer.writerow([row["filename"], row["doi"], row["locator"]])
    atomic.write_text(dest, text.getvalue())


def emps_layout(path):
    """EMPS published path -> (path written, conversion or None)."""
    if path.startswith("images/"):
        return path, convert_rgb_to_grey
    if path == "metadata.csv":
        return "sources.csv", convert_metadata_to_sources
    return path, None


# ----------------------------------------------------------------------------- the sources

ZENODO = "https://zenodo.org/records/{record}/files/{name}?download=1"
GITHUB_RAW = "https://raw.githubusercontent.com/{repository}/{commit}/{prefix}"
SYTWU_FILES = [f"{spec['tag']}_{kind}.h5" for spec in AU_DATASETS.values() if spec["source"] == "sytwu"
               for kind in ("Images", "Labels")]
GROSCHNER_FILES = [AU_DATASETS["Au5nmV1"]["images_file"], AU_DATASETS["Au5nmV1"]["maps_file"]]

# Each source gives its files by one of: `listing` (an HTTP directory index), `files` ({path: url}),
# `manifest` (a pinned GitHub file list with sizes and SHA-256, fetched through GITHUB_RAW).
SOURCES = {
    "cem500k": dict(
        page="https://www.ebi.ac.uk/empiar/EMPIAR-10592/",
        listing="https://ftp.ebi.ac.uk/empiar/world_availability/10592/data/",
    ),
    "au-sytwu": dict(
        page="https://doi.org/10.5281/zenodo.6419024",
        files={name: ZENODO.format(record=6419024, name=name) for name in SYTWU_FILES},
    ),
    "au-groschner": dict(
        page="https://doi.org/10.5281/zenodo.3755011",
        files={name: ZENODO.format(record=3755011, name=name) for name in GROSCHNER_FILES},
    ),
    "temimagenet": dict(
        page="https://github.com/xinhuolin/TEM-ImageNet-v1.3",
        files={"TEM-ImageNet-v1.3.zip": "https://github.com/xinhuolin/TEM-ImageNet-v1.3/archive/HEAD.zip"},
        extract=True,
    ),
    "msa_segtrack": dict(page="https://github.com/msa-em/microscopy-seg-track", manifest="msa_segtrack"),
    "emps": dict(page="https://github.com/by256/emps", manifest="emps", layout=emps_layout),
}


# ----------------------------------------------------------------------------- safe names

def is_safe_relative(name):
    """True when the posix path `name` stays inside the folder it is joined to (no `..`, `.`, absolute, `\\`, NUL)."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def destination(out, relative):
    """out / relative; a DownloadError when relative would land outside out."""
    if not is_safe_relative(relative):
        raise DownloadError(f"refusing to write {relative!r}: it would land outside {out}")
    return Path(out) / relative


def list_directory(url, timeout=30, depth=3, base=None):
    """{relative path: file URL} of an HTTP directory index (Apache/nginx style), recursing into sub-folders.

    Only links below `base` (default: url, which must end with '/') are kept; relative paths are
    percent-decoded and must stay inside their folder. Other file links are skipped with a warning.
    """
    base = base or url
    if not base.endswith("/"):
        raise ValueError(f"a directory listing URL must end with '/': {base}")
    with open_url(url, timeout=timeout) as response:
        page = response.read().decode("utf-8", errors="replace")
    files = {}
    for href in re.findall(r'href="([^"?#]+)"', page):
        link = urllib.parse.urljoin(url, html.unescape(href))
        is_folder = link.endswith("/")
        if not link.startswith(base) or link == base:
            if not is_folder and not href.startswith("mailto:"):
                warnings.warn(f"skipped {href!r} in {url}: it is outside the listing {base}", DownloadWarning)
            continue
        relative = urllib.parse.unquote(link[len(base):])
        if not is_safe_relative(relative.removesuffix("/") if is_folder else relative):
            warnings.warn(f"skipped {href!r} in {url}: its name {relative!r} would leave the output folder",
                          DownloadWarning)
        elif is_folder:
            if depth > 0 and link.startswith(url) and link != url:  # down only: listings link to their parents
                for name, file_url in list_directory(link, timeout, depth - 1, base).items():
                    files.setdefault(name, file_url)
        else:
            files.setdefault(relative, link)
    return files


def files_of(name, timeout=30):
    """{published relative path: (url, size or None, sha256 or None)} of a dataset in SOURCES."""
    source = SOURCES[name]
    if "manifest" in source:
        manifest = manifests.load(source["manifest"])
        base = GITHUB_RAW.format(**manifest)
        return {path: (base + urllib.parse.quote(path), size, sha) for path, (size, sha) in manifest["files"].items()}
    if "listing" in source:
        return {path: (url, None, None) for path, url in list_directory(source["listing"], timeout).items()}
    return {path: (url, None, None) for path, url in source["files"].items()}


# ----------------------------------------------------------------------------- one file

def sha256_of(path, chunk=1 << 20):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def open_url(url, offset=0, validator=None, timeout=30):
    """Open url (from byte offset, only if the file still matches validator); returns the response.

    HTTP 416 to a range request is returned as the error response (status 416); any other
    HTTP error or a network failure becomes a one-line DownloadError.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "emlib"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        request.add_header("If-Range", validator)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return err
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {url} ({reason}); are you offline?") from None


def validator_of(response):
    """The strong ETag of a response, else its Last-Modified, else None (then If-Range cannot be used)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def announced_total(response):
    """The full file length the server announces: Content-Range's total for 206/416, Content-Length for 200."""
    if response.status == 200:
        length = response.headers.get("Content-Length", "")
    else:
        length = response.headers.get("Content-Range", "").rsplit("/", 1)[-1].strip()
    return int(length) if length.isdigit() else None


def read_sidecar(sidecar):
    """The record of a .part (url, validator, total) or None when missing or unreadable."""
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None


def resume_point(url, part, sidecar, size):
    """(offset, record) to resume part from; (0, None) after discarding a .part that cannot be resumed."""
    record = read_sidecar(sidecar)
    have = part.stat().st_size if part.exists() else 0
    if have and record and record.get("url") == url and record.get("validator") and (size is None or have <= size):
        return have, record
    discard(part, sidecar)
    return 0, None


def discard(*paths):
    """Remove the given files where they exist."""
    for path in paths:
        path.unlink(missing_ok=True)


def confirms_same_file(response, offset, record, size):
    """True when a 206 answer continues exactly the file the .part holds the start of."""
    content_range = response.headers.get("Content-Range", "")
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", content_range.strip())
    if match is None or int(match.group(1)) != offset:
        return False
    validator = validator_of(response)
    if validator is not None and validator != record["validator"]:
        return False  # the server ignored If-Range: it is another file
    total, remembered = announced_total(response), size if size is not None else record.get("total")
    return total is None or remembered is None or total == remembered


def write_body(response, part, mode, offset, total, url, progress):
    """Append (mode 'ab') or write ('wb') the response body to part, with a progress bar."""
    with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, leave=False,
                                     desc=part.name.removesuffix(".part"), disable=not progress) as bar:
        try:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(f"{url}: connection lost ({err!r}); run again to resume") from None


def fetch_part(url, part, sidecar, size, timeout, progress):
    """Bring part up to date with url, resuming only what the server confirms; returns the announced total or None."""
    for _ in range(2):  # a second go from zero when the server's answer does not fit the .part
        offset, record = resume_point(url, part, sidecar, size)
        with open_url(url, offset, record and record["validator"], timeout) as response:
            total = announced_total(response)
            if size is not None and total is not None and total != size and response.status == 200:
                raise DownloadError(f"{url}: the server announces {total} bytes, the published file has {size}")
            if response.status == 416:
                same = validator_of(response) in (None, record["validator"])
                if same and part.stat().st_size == (size if size is not None else total):
                    return total  # complete already; verify() checks the hash
            elif response.status == 206:
                if confirms_same_file(response, offset, record, size):
                    write_body(response, part, "ab", offset, total, url, progress)
                    return total
            elif response.status == 200:  # a fresh start: from zero, or the file changed since the .part
                validator = validator_of(response)
                sidecar.write_text(json.dumps(dict(url=url, validator=validator, total=total)))
                write_body(response, part, "wb", 0, total, url, progress)
                return total
            else:
                raise DownloadError(f"{url}: unexpected HTTP {response.status}")
        discard(part, sidecar)
    raise DownloadError(f"{url}: the server's answers to a range request do not fit {part}; not resumed")


def verify(part, sidecar, expected, sha256, url):
    """Check a finished part's size (when expected is known) and sha256 (when given); DownloadError if wrong."""
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise DownloadError(f"{url}: got {got} of {expected} bytes; run again to resume")
    if expected is not None and got > expected:
        discard(part, sidecar)
        raise DownloadError(f"{url}: got {got} bytes, more than the {expected} expected; removed {part}, run again")
    if sha256 is not None and sha256_of(part) != sha256:
        discard(part, sidecar)
        raise DownloadError(f"checksum mismatch for {part.name.removesuffix('.part')} (downloaded from {url}); "
                            f"removed {part}")
    if expected is None and sha256 is None:
        warnings.warn(f"{url}: the server sent no length and no checksum is known, so "
                      f"{part.name.removesuffix('.part')} could not be checked for completeness", DownloadWarning)


def download_file(url, dest, size=None, sha256=None, timeout=30, progress=True):
    """Download url to dest through dest.part (resumable), checking size and sha256 when given; returns dest.

    A dest that exists is kept (it was checked when written) if its size is right.
    """
    dest = Path(dest)
    if dest.exists():
        if size is not None and dest.stat().st_size != size:
            raise DownloadError(f"{dest} exists with {dest.stat().st_size} bytes, but the published file has "
                                f"{size}; delete it to download again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, sidecar = dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")
    total = fetch_part(url, part, sidecar, size, timeout, progress)
    verify(part, sidecar, size if size is not None else total, sha256, url)
    os.replace(part, dest)
    discard(sidecar)
    return dest


# ----------------------------------------------------------------------------- a dataset

def download(name, out, timeout=30, progress=True):
    """Download dataset `name` into the folder out (converting and unzipping as its source says); returns the paths."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SOURCES)}")
    source, out = SOURCES[name], Path(out)
    layout = source.get("layout", lambda path: (path, None))
    files = files_of(name, timeout)
    paths = []
    bar = tqdm(files.items(), desc=name, unit="file", leave=False, disable=not progress or len(files) < 2)
    for published, (url, size, sha256) in bar:
        relative, convert = layout(published)
        dest = destination(out, relative)
        if convert is None:
            download_file(url, dest, size, sha256, timeout, progress)
        elif not dest.exists():
            staged = download_file(url, dest.with_name(dest.name + ".published"), size, sha256, timeout, progress)
            convert(staged, dest)
            staged.unlink()
        if source.get("extract") and dest.suffix == ".zip":
            with zipfile.ZipFile(dest) as archive:
                archive.extractall(out)
        paths.append(dest)
    return paths
