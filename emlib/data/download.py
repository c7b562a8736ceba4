"""Resumable downloads of the real datasets (not run on CI: the tests use a local server).

    python -m emlib data download au-sytwu --out data/real/au

A file is fetched into `<name>.part` and renamed when complete; an interrupted
download resumes from the `.part` file with an HTTP Range request (and starts
over when the server ignores ranges). A checksum is verified when one is known.
Without a network the command prints one line saying so, not a traceback.

Sources (file names of the Zenodo records as given in DESIGN section 4; the
CEM500K files are read from the EMPIAR directory listing, so no name is guessed):
- cem500k: EMPIAR-10592 (Conrad & Narayan 2021), https://www.ebi.ac.uk/empiar/EMPIAR-10592/
- au-sytwu: Zenodo 6419024 (Sytwu et al. 2022), four `<tag>_Images.h5` / `<tag>_Labels.h5` pairs
- au-groschner: Zenodo 3755011 (Groschner et al. 2021), the Au5nmV1 pair
- temimagenet: GitHub xinhuolin/TEM-ImageNet-v1.3 (Lin et al. 2021), the repository archive
"""
import hashlib
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from emlib.data.au import AU_DATASETS

ZENODO = "https://zenodo.org/records/{record}/files/{name}?download=1"
SYTWU_FILES = [f"{spec['tag']}_{kind}.h5" for spec in AU_DATASETS.values() if spec["source"] == "sytwu"
               for kind in ("Images", "Labels")]
GROSCHNER_FILES = [AU_DATASETS["Au5nmV1"]["images_file"], AU_DATASETS["Au5nmV1"]["maps_file"]]

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
}
CHECKSUMS = {}  # file name -> sha256, where known


class DownloadError(RuntimeError):
    """A download that cannot proceed (offline, server error, bad checksum); the message says why."""


def sha256_of(path, chunk=1 << 20):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def open_url(url, offset=0, timeout=30):
    """Open url (with a Range header from offset); network failures become DownloadError."""
    request = urllib.request.Request(url, headers={"User-Agent": "emlib"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the .part file is complete
            return None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {url} ({reason}); are you offline?") from None


def download_file(url, dest, sha256=None, timeout=30, progress=True):
    """Download url to dest, resuming from dest.part; verify sha256 when given. Returns dest."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    response = open_url(url, offset, timeout)
    if response is not None:
        with response:
            if offset and response.status != 206:  # the server ignored the range: start over
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with open(part, "ab" if offset else "wb") as f, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar:
                try:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        f.write(block)
                        bar.update(len(block))
                except OSError as err:
                    raise DownloadError(f"{url}: connection lost ({err}); run again to resume") from None
            if total is not None and part.stat().st_size != total:
                raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
    if sha256 is not None and sha256_of(part) != sha256:
        part.unlink()
        raise DownloadError(f"checksum mismatch for {dest} (downloaded from {url}); the partial file was removed")
    part.rename(dest)
    return dest


def list_directory(url, timeout=30, depth=3):
    """File URLs of an HTTP directory index (Apache/nginx style), recursing into sub-folders."""
    with open_url(url, timeout=timeout) as response:
        html = response.read().decode("utf-8", errors="replace")
    files = []
    for href in re.findall(r'href="([^"?#]+)"', html):
        if href.startswith(("/", "..", "http:", "https:", "mailto:")):
            continue  # parent folder, sorting links, elsewhere
        link = urllib.parse.urljoin(url, href)
        if href.endswith("/"):
            if depth > 0:
                files += list_directory(link, timeout, depth - 1)
        else:
            files.append(link)
    return files


def files_of(name, timeout=30):
    """{relative path: url} of a dataset in SOURCES."""
    source = SOURCES[name]
    if "listing" in source:
        base = source["listing"]
        return {urllib.parse.unquote(u[len(base):]): u for u in list_directory(base, timeout)}
    return dict(source["files"])


def download(name, out, timeout=30, progress=True):
    """Download (and unzip archives of) dataset `name` into the folder out; returns the paths written."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SOURCES)}")
    out = Path(out)
    paths = []
    for relative, url in files_of(name, timeout).items():
        path = download_file(url, out / relative, CHECKSUMS.get(relative), timeout, progress)
        if SOURCES[name].get("extract") and path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                archive.extractall(out)
        paths.append(path)
    return paths
