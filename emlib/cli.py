"""The command line: `python -m emlib <command> ...`.

Each module owns its subcommand: it exposes `add_cli(subparsers)`, which adds a
parser and sets `func` to the function that runs it. Modules are imported only
when listed here, so `python -m emlib --help` stays fast.
"""
import argparse
import importlib

COMMANDS = {
    "data": "emlib.data.cli",
    "pretrain": "emlib.pretrain",
    "finetune": "emlib.finetune",
    "sweep": "emlib.sweep",
    "export": "emlib.bioimageio",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emlib", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # this capability is not built yet
        module.add_cli(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return result if isinstance(result, int) else 0
