"""Packaging beyond pyproject.toml: the real-data study's small artefacts go into the wheel.

`results/real_small/` (the study's generators, run summaries and BioImage.IO packages)
lives at the repository root, outside the package; a wheel (`pip install git+...`, Colab)
carries a copy as `emlib/_results/real_small/`, which `emlib.paths.repository_path` finds
when there is no checkout around the package. Of the fine-tuned weights it carries only
those of the runs the study packaged (bioimageio/<run id>.zip): the other ninety are
needed by nobody without a checkout and would make the wheel about 90 MB.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STUDIES = ("real_small",)  # folders of results/ that a pip install carries, whole
LEFT_OUT = ("checkpoint.pt", "sweep.log", ".lock", "*.tmp")  # what only a running sweep needs (.gitignore)


class BuildWithStudy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout's results/
            return
        for study in STUDIES:
            source, target = Path("results") / study, Path(self.build_lib) / "emlib" / "_results" / study
            if source.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target, ignore=ignore_in(source))


def ignore_in(study: Path):
    """shutil.copytree's ignore: LEFT_OUT, and the fine-tuned weights of runs without a package."""
    packaged = {path.stem for path in (study / "bioimageio").glob("*.zip")}
    left_out = shutil.ignore_patterns(*LEFT_OUT)

    def ignore(folder, names):
        ignored = set(left_out(folder, names))
        if Path(folder).parent == study and Path(folder).name not in packaged:
            ignored |= {name for name in names if name == "best_model.safetensors"}
        return ignored

    return ignore


setup(cmdclass={"build_py": BuildWithStudy})
