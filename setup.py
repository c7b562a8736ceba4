"""Packaging beyond pyproject.toml: the real-data study's small artefacts go into the wheel.

`results/real_small/` (the study's generators, run summaries and BioImage.IO packages, a
few MB) lives at the repository root, outside the package; a wheel (`pip install
git+...`, Colab) carries a copy as `emlib/_results/real_small/`, which
`emlib.paths.repository_path` finds when there is no checkout around the package.
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
                shutil.copytree(source, target, ignore=shutil.ignore_patterns(*LEFT_OUT))


setup(cmdclass={"build_py": BuildWithStudy})
