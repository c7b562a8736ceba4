"""Pinned file lists with sizes and SHA-256 of the datasets published in git repositories.

Each dataset's manifest ships as `emlib/data/checksums/<name>.json`:

    {"repository": "by256/emps", "commit": "<40 hex>", "prefix": "",
     "files": {"images/00655d9628.png": [188403, "<sha256>"], ...}}

Paths are relative to `prefix` inside the repository; size and hash are those of
the file as published at that commit (what `raw.githubusercontent.com` serves).
A manifest is generated once from a clone of the repository (bare or not):

    git clone https://github.com/by256/emps /tmp/emps
    python -m emlib.data.manifests emps /tmp/emps

and was cross-checked against the byte-identical copies in `../shared/data/real`
(tests/test_data_download.py repeats that check wherever the copies exist).
"""
import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

PINNED = {
    "msa_segtrack": dict(
        repository="msa-em/microscopy-seg-track",
        commit="657a8d122c81b8abe262deb96b10d3b5beeae7f2",
        prefix="notebooks/dataset/",
        include=("train/images/", "train/labels/", "test/images/", "test/labels/"),
    ),
    "emps": dict(
        repository="by256/emps",
        commit="dd8f86d714894fd08f3db80041893982ce058dd6",
        prefix="",
        include=("images/", "segmaps/", "train.csv", "test.csv", "metadata.csv"),
    ),
}
FOLDER = Path(__file__).with_name("checksums")


def load(name):
    """The shipped manifest of dataset `name` as a dict (see the module docstring)."""
    source = resources.files("emlib.data") / "checksums" / f"{name}.json"
    if not source.is_file():
        raise FileNotFoundError(f"no manifest {name}.json in emlib/data/checksums; choose one of {sorted(PINNED)}")
    return json.loads(source.read_text())


def git_blobs(git_dir, commit, prefix, include):
    """{path below prefix: blob id} of the files at commit whose path starts with one of include."""
    listing = subprocess.run(["git", "-C", str(git_dir), "ls-tree", "-r", commit, "--", prefix or "."],
                             capture_output=True, text=True, check=True).stdout
    blobs = {}
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        relative = path[len(prefix):]
        if meta.split()[1] == "blob" and relative.startswith(include):
            blobs[relative] = meta.split()[2]
    return blobs


def read_blobs(git_dir, blob_ids):
    """Contents of the given blobs, in order, through one `git cat-file --batch` process."""
    process = subprocess.run(["git", "-C", str(git_dir), "cat-file", "--batch"],
                             input="".join(f"{b}\n" for b in blob_ids).encode(), capture_output=True, check=True)
    out, position, contents = process.stdout, 0, []
    for _ in blob_ids:
        header_end = out.index(b"\n", position)
        size = int(out[position:header_end].split()[2])
        contents.append(out[header_end + 1:header_end + 1 + size])
        position = header_end + 1 + size + 1  # content is followed by a newline
    return contents


def build(name, git_dir):
    """The manifest of dataset `name` computed from a git clone of its repository (which must hold the commit)."""
    spec = PINNED[name]
    blobs = git_blobs(git_dir, spec["commit"], spec["prefix"], spec["include"])
    if not blobs:
        raise ValueError(f"{git_dir}: no files under {spec['prefix']!r} matching {spec['include']} at {spec['commit']}")
    paths = sorted(blobs)
    files = {path: [len(data), hashlib.sha256(data).hexdigest()]
             for path, data in zip(paths, read_blobs(git_dir, [blobs[p] for p in paths]))}
    return dict(repository=spec["repository"], commit=spec["commit"], prefix=spec["prefix"], files=files)


def write(manifest, path):
    """Write a manifest as JSON, one file a line (small diffs, readable)."""
    head = {k: v for k, v in manifest.items() if k != "files"}
    lines = [f"  {json.dumps(p)}: {json.dumps(entry)}" for p, entry in manifest["files"].items()]
    text = json.dumps(head, indent=2)[:-2] + ',\n  "files": {\n  ' + ",\n  ".join(lines) + "\n  }\n}\n"
    assert json.loads(text) == manifest
    Path(path).write_text(text)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in PINNED:
        sys.exit(f"usage: python -m emlib.data.manifests {{{','.join(PINNED)}}} GIT_CLONE_DIR")
    name, git_dir = sys.argv[1:]
    manifest = build(name, git_dir)
    write(manifest, FOLDER / f"{name}.json")
    print(f"{len(manifest['files'])} files of {name} at {manifest['commit'][:7]} -> {FOLDER / f'{name}.json'}")
