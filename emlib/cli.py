"""The command line: `python -m emlib <command> ...`.

Each module owns its subcommand: it exposes `add_cli(subparsers)`, which adds a
parser and sets `func` to the function that runs it. Modules are imported only
when listed here, so `python -m emlib --help` stays fast.

Errors are one line, `error: <message>`, on stderr, and the exit status says
what happened (`--traceback` shows the full traceback instead):

    0    success
    1    the run failed (NaN/inf, disk full, run folder in use, ...)
    2    bad usage or bad data (ValueError, FileNotFoundError; argparse errors too)
    130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: resume with --resume
"""
import argparse
import importlib
import signal
import sys

COMMANDS = {
    "data": "emlib.data.cli",
    "pretrain": "emlib.pretrain",
    "finetune": "emlib.finetune",
    "sweep": "emlib.sweep",
    "export": "emlib.bioimageio",
}


USAGE_ERRORS = (ValueError, FileNotFoundError)  # exit status 2; other errors 1
# Errors the library raises on purpose, with a message that says it all; others get
# their type name and a pointer to --traceback.
EXPECTED_ERRORS = USAGE_ERRORS + (OSError, FloatingPointError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emlib", description=__doc__.splitlines()[0],
                                     epilog="exit status: 0 ok, 1 failed, 2 bad usage or data, 130/143 interrupted (SIGINT/SIGTERM)")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error (debugging)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # this capability is not built yet
        module.add_cli(subparsers)
    for subparser in subparsers.choices.values():  # --traceback after the subcommand too
        subparser.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                               help="show the full traceback of an error (debugging)")
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print("error: interrupted", file=sys.stderr)
        return 128 + int(signal.SIGINT)
    except Exception as err:
        if args.traceback:
            raise
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2 if isinstance(err, USAGE_ERRORS) else 1
    return result if isinstance(result, int) else 0


def error_message(err: BaseException) -> str:
    """One line for an error: its message, with the type and a pointer to --traceback
    for errors that the library does not raise on purpose (bugs)."""
    message = str(err).strip() or type(err).__name__
    if isinstance(err, EXPECTED_ERRORS) and str(err).strip():
        return message
    return f"{type(err).__name__}: {message} (run again with --traceback for the full traceback)"
