"""The command line: `python -m emlib <command> ...`.

The command line sits on top of the package: the loops never import it. Each other
module owns its subcommand: it exposes `add_cli(subparsers)`, which adds a parser and
sets `func` to the function that runs it. The run commands (`pretrain`, `finetune`)
are built here (`add_run_parser`): one flag per field of the run's config dataclass;
the loop's `make_config(fields, toy)` turns the `--config` file and flags into its config.

Errors are one line, `error: <message>`, on stderr, and the exit status says
what happened (`--traceback` shows the full traceback instead):

    0    success
    1    the run failed (NaN/inf, disk full, run folder in use, ...)
    2    bad usage or bad data (ValueError, FileNotFoundError; argparse errors too)
    130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: resume with --resume
"""
import argparse
import dataclasses
import importlib
import json
import os
import signal
import sys


# Each command's module and its one-line summary: `python -m emlib --help` lists them
# without importing any module (torch takes seconds to import); a command imports its own.
COMMANDS = {
    "data": ("emlib.data.cli", "write the synthetic datasets, or download and verify the real ones"),
    "pretrain": ("emlib.pretrain", "GAN (Pix2Pix) pretraining of a generator on any folder of EM images (CEM500K or your own)"),
    "finetune": ("emlib.finetune", "fine-tune segmentation (Au, nanoparticles, your images + masks) or restoration (TEMImageNet)"),
    "predict": ("emlib.prediction", "segment or restore your images with a finished run or a BioImage.IO package"),
    "sweep": ("emlib.sweep", "run (or --dry-run) a grid of experiments from a YAML spec, resumable"),
    "export": ("emlib.bioimageio", "export a finished run as a BioImage.IO model package (deepImageJ, ilastik, napari)"),
}


USAGE_ERRORS = (ValueError, FileNotFoundError)  # exit status 2; other errors 1
# Errors the library raises on purpose, with a message that says it all; others get
# their type name and a pointer to --traceback.
EXPECTED_ERRORS = USAGE_ERRORS + (OSError, FloatingPointError, RuntimeError)


def build_parser(command: str | None = "all") -> argparse.ArgumentParser:
    """The argument parser: every command's ("all"), or `command`'s own parser (its module
    imported) beside one-line entries for the others; with None, `python -m emlib --help`
    imports nothing heavy."""
    parser = argparse.ArgumentParser(prog="python -m emlib", description=__doc__.splitlines()[0],
                                     epilog="exit status: 0 ok, 1 failed, 2 bad usage or data, 130/143 interrupted (SIGINT/SIGTERM)")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error (debugging)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        if name == command or command == "all":
            RUN_COMMANDS.get(name, lambda s: importlib.import_module(module_name).add_cli(s))(subparsers)
            for entry in subparsers._choices_actions:  # the command's line in `--help`: the summary above
                entry.help = summary if entry.dest == name else entry.help
        else:
            subparsers.add_parser(name, help=summary)
    for subparser in subparsers.choices.values():  # --traceback after the subcommand too
        subparser.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                               help="show the full traceback of an error (debugging)")
    return parser


def command_of(argv) -> str | None:
    """The command named on a command line (its first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv=None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_of(argv)).parse_args(argv)
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


# ----------------------------------------------------------------------------- run commands: config <-> flags


def add_run_parser(subparsers, name: str, cls, help: str, description: str, field_help=None):
    """The subcommand of one run kind: --toy, --config FILE.json, --resume, --overwrite,
    and one flag per field of config dataclass `cls` (`field_help`: {field: what its values mean})."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("--toy", action="store_true", help=f"start from {cls.__name__}.toy() (CPU, synthetic data)")
    parser.add_argument("--config", help=f"JSON file of {cls.__name__} fields (flags override it)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from output_dir/checkpoint.pt (epochs may grow, lr may change; starts fresh without one)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in output_dir (refused without it)")
    add_config_arguments(parser, cls, field_help)
    return parser


def add_config_arguments(parser, cls, field_help=None) -> None:
    """One `--field-name` flag per field of config dataclass `cls` (defaults suppressed,
    so that only the flags given on the command line override --config / presets).

    bool fields get `--x/--no-x`; tuple fields take several values; fields whose
    default is None take a value, or "none" for None.
    """
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        what = (field_help or {}).get(field.name)
        kwargs = {"dest": field.name, "default": argparse.SUPPRESS,
                  "help": f"{what} (default: {default!r})" if what else f"(default: {default!r})"}
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif _is_mode_field(field):  # True, False or "auto": --x, --x auto, --no-x
            parser.add_argument(flag, nargs="?", const=True, type=_parse_mode, metavar="{auto,true,false}", **kwargs)
            parser.add_argument("--no-" + flag[2:], dest=field.name, action="store_const", const=False,
                                default=argparse.SUPPRESS, help=f"the same as {flag} false")
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs=len(default), type=type(default[0]), **kwargs)
        else:
            parser.add_argument(flag, type=_parse_value(field.type, default), **kwargs)


def _is_mode_field(field) -> bool:
    """A field that holds True, False or "auto" (annotated `bool | str`)."""
    return field.default == "auto" and "bool" in str(field.type)


def _parse_mode(value: str):
    """"auto" or a boolean word (true/false, yes/no, on/off, 1/0)."""
    words = {"auto": "auto", "true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False,
             "0": False}
    if value.lower() not in words:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got {value!r}")
    return words[value.lower()]


def _parse_value(annotation, default):
    """A parser for one flag value from the field's annotation and default."""
    text = str(annotation)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        base = type(default)
    elif "int" in text and "float" not in text:
        base = int
    elif "float" in text:
        base = float
    else:
        base = str

    def parse(value: str):
        return None if value.lower() == "none" else base(value)

    parse.__name__ = base.__name__
    return parse


def add_pretrain(subparsers) -> None:
    """`python -m emlib pretrain [--toy] [--config FILE.json] [--field value ...] [--resume]`."""
    from emlib import pretrain
    parser = add_run_parser(subparsers, "pretrain", pretrain.PretrainConfig, description=pretrain.__doc__.splitlines()[0],
                            help="pretrain", field_help=pretrain.field_help())
    parser.set_defaults(func=lambda args: run_command(pretrain, args, leave_out=("val_l1",)))


def add_finetune(subparsers) -> None:
    """`python -m emlib finetune --task segmentation|denoising|background_removal|super_resolution [--toy] ...`."""
    from emlib import finetune
    parser = add_run_parser(subparsers, "finetune", finetune.FinetuneConfig, description=finetune.__doc__.splitlines()[0],
                            help="fine-tune", field_help=finetune.field_help())
    parser.add_argument("--images", dest="images_dir", default=argparse.SUPPRESS,
                        help="with --dataset folder: your folder of images (the same as --images-dir)")
    parser.add_argument("--masks", dest="masks_dir", default=argparse.SUPPRESS,
                        help="with --dataset folder: the folder of their masks, paired by file name (--masks-dir)")
    parser.set_defaults(func=lambda args: run_command(finetune, args, leave_out=("val_history",)))


RUN_COMMANDS = {"pretrain": add_pretrain, "finetune": add_finetune}  # the loops' parsers, built here


def run_command(loop, args, leave_out=()) -> int:
    """Run a loop (emlib.pretrain or emlib.finetune) on the config its arguments name; print its summary."""
    summary = loop.run(loop.config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    print_run_summary(summary, leave_out=leave_out)
    return exit_code(summary)


def print_run_summary(summary: dict, leave_out=()) -> None:
    """Print a run's summary as JSON, once: on rank 0 of a torchrun launch, or in a single process."""
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is gone by now: ask torchrun's variable
        print(json.dumps({k: v for k, v in summary.items() if k not in leave_out}, indent=2))


def exit_code(summary: dict) -> int:
    """The exit status for a run summary: 0 when finished; for an interrupted run
    128 + the signal's number, as shells report it (130 SIGINT, 143 SIGTERM)."""
    if summary.get("status") != "interrupted":
        return 0
    name = summary.get("signal")
    return 128 + signal.Signals[name].value if name in signal.Signals.__members__ else 1
