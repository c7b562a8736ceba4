"""`--help` as a reference: quick, and listing the values each flag takes."""
import subprocess
import sys

from emlib import cli, inits
from emlib.data import SEGMENTATION_DATASETS, TEMIMAGENET_TASKS


def help_of(*argv) -> str:
    return subprocess.run([sys.executable, "-m", "emlib", *argv, "--help"], capture_output=True, text=True, check=True).stdout


def test_the_top_level_help_imports_no_command_module():
    code = ("import sys\nfrom emlib import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'emlib.pretrain', 'emlib.finetune', 'emlib.sweep') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"  # importing torch took 6 s of a 6.5 s --help
    for name in cli.COMMANDS:
        assert name in result.stdout


def test_the_flags_list_their_values():
    text = " ".join(help_of("finetune").split())
    for name in (*SEGMENTATION_DATASETS, *TEMIMAGENET_TASKS, *inits.PRETRAINED):
        assert name in text
    assert "Table 1" in text and "--images DIR --masks DIR" in text
    assert "any folder of 2-D EM images" in " ".join(help_of("pretrain").split())


def test_a_command_still_parses_its_flags():
    args = cli.build_parser(cli.command_of(["finetune", "--toy", "--epochs", "2"])).parse_args(["finetune", "--toy", "--epochs", "2"])
    assert args.command == "finetune" and args.epochs == 2 and args.toy
