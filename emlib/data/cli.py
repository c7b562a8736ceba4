"""`python -m emlib data synth --out DIR` and `python -m emlib data download NAME --out DIR`."""
import sys
import warnings

from emlib.data.download import SOURCES, DownloadError, DownloadWarning, download
from emlib.data.synthetic import SCALES, ensure_synthetic


def add_cli(subparsers):
    """Register the `data` command and its `synth` / `download` sub-commands."""
    parser = subparsers.add_parser("data", help="write synthetic data or download the real datasets")
    commands = parser.add_subparsers(dest="data_command", required=True)

    synth = commands.add_parser("synth", help="write the synthetic stand-ins of all three datasets")
    synth.add_argument("--out", required=True, help="folder to write (gets cem500k/, au/, temimagenet/)")
    synth.add_argument("--scale", default="ci", choices=sorted(SCALES))
    synth.set_defaults(func=run_synth)

    download = commands.add_parser("download", help="download a real dataset (resumable)")
    download.add_argument("name", choices=sorted(SOURCES))
    download.add_argument("--out", required=True, help="the dataset's folder (e.g. data/real/nanoparticles/emps)")
    download.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation")
    download.set_defaults(func=run_download)


def run_synth(args):
    root = ensure_synthetic(args.out, scale=args.scale)
    print(f"synthetic data ({args.scale}) in {root}")
    return 0


def run_download(args):
    """Download one dataset; warnings and failures are one line each on stderr (no traceback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", DownloadWarning)
        warnings.showwarning = lambda message, *rest, **kw: print(f"warning: {message}", file=sys.stderr)
        try:
            paths = download(args.name, args.out, timeout=args.timeout)
        except DownloadError as err:  # usually offline
            print(f"error: download of {args.name} failed: {err} (source: {SOURCES[args.name]['page']})",
                  file=sys.stderr)
            return 1
    checked = "sizes and SHA-256 checked" if "manifest" in SOURCES[args.name] else "sizes checked as announced"
    print(f"{len(paths)} file(s) of {args.name} in {args.out} ({checked})")
    return 0
