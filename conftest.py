"""pytest settings shared by `make test`'s two runs, `pytest tests` and `pytest --nbval notebooks`, under
pytest-xdist: one test file, or one notebook, is one unit of work on one worker, run in order (a notebook's cells
share one kernel). Chapter 06 reads the toy runs that chapters 04 and 05 write under notebooks/runs, so those
three are one unit, in reading order."""
from pathlib import Path

TOY_RUN_CHAIN = ("04_segmentation.ipynb", "05_restoration.ipynb", "06_paper_results.ipynb")


def pytest_xdist_make_scheduler(config, log):
    # A scheduler of our own rather than --dist loadgroup: xdist 3.8 marks groups by renaming test ids,
    # which pytest 9.2 no longer allows, so its groups are silently ignored.
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            file = nodeid.split("::", 1)[0]
            return "toy-runs" if Path(file).name in TOY_RUN_CHAIN else file

    return FileScheduling(config, log)
