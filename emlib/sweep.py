"""The experiment grid runner: `python -m emlib sweep experiments/paper.yaml`.

The grid is data (a YAML file, expanded by `emlib.grid`): pretraining runs (generators
x CEM500K subsets) and fine-tuning runs (Au datasets x models x inits, TEMImageNet tasks
x inits), optionally times seeds and label fractions. Each run is one folder
`runs/<run-id>/` that follows the run contract: the sweep writes its
`config.json`, then runs

    python -m emlib pretrain|finetune --config runs/<id>/config.json --output-dir runs/<id>

(or executes the matching notebook with papermill). A run counts as finished iff
its `summary.json` exists; finished runs are skipped, interrupted ones (a
`checkpoint.pt` but no `summary.json`) are resumed with `--resume`, finished ones
whose spec now only raises their cap resume to train longer (`grid.run_change`), and
pretraining runs go before the fine-tuning runs that load their generator. A
failing run is reported and does not stop the others. At the end the results
CSVs of the finished runs are concatenated into `runs/results_segmentation.csv` and
`runs/results_restoration.csv`, and a summary pools the finished runs over seeds
only where their configs agree (`emlib.pooling.group_runs`).

Before anything runs, every run's full config is built by the loop's own
`make_config` (`check_configs`), so a bad field, dataset or data_root stops the sweep at once.
The sweep locks its runs folder (one sweep per folder), and a SIGTERM / SIGINT to
it is passed on to the runs it started (`Children`): they checkpoint, and the
sweep exits 143 / 130; running it again resumes them.
"""
import concurrent.futures
import contextlib
import csv
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from emlib import atomic, bioimageio, data, run_folder
from emlib.grid import (changed_runs, check_configs, expand_grid, extended_runs, format_listing, full_config, load_spec,
                        resume_fields, segmentation_data, select)
from emlib.paths import REPO_ROOT
from emlib.pooling import group_runs, load_runs, summary_table
from emlib.results import RESTORATION_COLUMNS, SEGMENTATION_COLUMNS, read_rows
from emlib.run_folder import run_status, write_rows
from emlib.runs import finished_runs
NOTEBOOKS = {"pretrain": "notebooks/03_pretraining.ipynb", "segmentation": "notebooks/04_segmentation.ipynb",
             "restoration": "notebooks/05_restoration.ipynb"}

# ---------------------------------------------------------------- the grid


# ---------------------------------------------------------------- running


# Display switches of the chapters, set so that a notebook makes exactly the grid cell's run and no other.
NOTEBOOK_SWITCHES = {"compare_init": None, "compare_model": None, "real_results": None, "other_tasks": False,
                     "show_widgets": False}


def build_command(run, run_dir: Path, resume: bool, toy: bool = False, runner: str = "cli") -> list:
    """The argv that executes one run: the emlib CLI (under torchrun for several
    GPUs) or, with runner="papermill", the run's notebook with its config as parameters."""
    if runner == "papermill":
        notebook = REPO_ROOT / NOTEBOOKS[run.task]
        if not notebook.exists():
            raise FileNotFoundError(f"papermill runner: notebook {notebook} not found (it ships with the repository, not the package)")
        parameters = {**full_config(run, run_dir, toy), **NOTEBOOK_SWITCHES, "resume": resume}
        (run_dir / "parameters.yaml").write_text(yaml.safe_dump(parameters, sort_keys=False))
        # The notebook runs in this process's working folder, as the CLI would: relative paths mean the same.
        return [sys.executable, "-m", "papermill", str(notebook), str(run_dir / "notebook.ipynb"),
                "-f", str(run_dir / "parameters.yaml"), "-k", "python3", "--language", "python", "--cwd", os.getcwd()]
    if runner != "cli":
        raise ValueError(f"runner must be 'cli' or 'papermill', got {runner!r}")
    launcher = [sys.executable]
    if run.gpus > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={run.gpus}"]
    argv = launcher + ["-m", "emlib", run.kind, "--config", str(run_dir / "config.json"), "--output-dir", str(run_dir)]
    if resume:  # the spec's mode and an extension's cap: config.json changes only once the run has checked them
        for name, value in resume_fields(run, run_dir, toy).items():
            argv += [f"--{name.replace('_', '-')}", str(value).lower()]
    return argv + (["--resume"] if resume else []) + (["--toy"] if toy else [])


class Children:
    """The runs this sweep process has started, so that a SIGTERM / SIGINT to the sweep
    reaches them: each is passed the signal, checkpoints and exits 143 / 130, and the
    sweep starts no other run (`stopped_by` names the signal)."""

    def __init__(self):
        self._lock, self._running, self.stopped_by = threading.Lock(), set(), None

    def run(self, argv: list, log) -> int | None:
        """Run argv to its end, its output to the file `log`; its exit code, or None when the sweep was stopped first."""
        with self._lock:
            if self.stopped_by is not None:
                return None
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=_stop_with_parent(os.getpid()) if _PRCTL else None)
            self._running.add(process)
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self, signum, frame=None) -> None:
        """A signal handler: pass `signum` on to every running child, start nothing new."""
        with self._lock:
            self.stopped_by = signal.Signals(signum).name
            for process in self._running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    @contextlib.contextmanager
    def forwarding_signals(self):
        """Route SIGINT / SIGTERM to `stop` (in the main thread; the old handlers come back after)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.stopped_by = None
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _load_prctl():
    """libc's prctl on Linux (bound once, before any fork), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent_pid: int):
    """For Popen's preexec_fn: the child gets SIGTERM when the sweep dies, even by SIGKILL or the OOM killer,
    so its run checkpoints and stops instead of training on, orphaned (Linux; SIGTERM / SIGINT are
    forwarded by `Children.stop` everywhere)."""
    def preexec():
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the sweep died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


CHILDREN = Children()  # this process's; module-level so that execute_command stays picklable for submitit


def execute_command(argv: list, log_path: str) -> int | None:
    """Run argv, appending its output to log_path; return the exit code (None: not started,
    the sweep was stopped). A module-level function so that submitit can pickle it."""
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(map(str, argv))}\n")
        log.flush()
        return CHILDREN.run(argv, log)


def prepare(run, runs_dir, command_builder) -> tuple:
    """Create the run folder, write config.json (atomically) unless the run already wrote
    one, and return (argv, log path). A config.json that does not parse in a folder
    without summary.json (torn by a crash) is written again, with a line in sweep.log."""
    run_dir = Path(runs_dir) / run.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = run_status(run_dir) != "new"  # unfinished, or finished and extended (`grid.run_change`)
    config_path, log_path = run_dir / "config.json", run_dir / "sweep.log"
    if config_path.exists() and run_status(run_dir) != "finished" and not _parses(config_path):
        with open(log_path, "a") as log:
            log.write(f"\nsweep: {config_path} did not parse (torn by a crash?); written again from the spec\n")
        tqdm.write(f"{run.run_id}: {config_path} did not parse (torn by a crash?); written again from the spec")
        config_path.unlink()
    if not config_path.exists():
        atomic.write_json(config_path, run.config, sort_keys=False)
    return command_builder(run, run_dir, resume), str(log_path)


def _parses(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _outcome(run_dir, exit_code):
    if exit_code is None:
        return f"not started (the sweep was stopped by {CHILDREN.stopped_by})"
    if exit_code in (128 + signal.SIGINT, 128 + signal.SIGTERM) and run_status(run_dir) == "unfinished":
        return (f"interrupted by {signal.Signals(exit_code - 128).name} (exit code {exit_code}); its checkpoint is kept: "
                "run the sweep again to resume it")
    if exit_code != 0:
        return f"failed (exit code {exit_code}; see {Path(run_dir) / 'sweep.log'})"
    if run_status(run_dir) != "finished":
        return f"failed (exit code 0 but no summary.json in {run_dir})"
    return "finished"


def _done(run, runs_dir, extend) -> bool:
    return run_status(Path(runs_dir) / run.run_id) == "finished" and run.run_id not in extend


def _stages(runs):
    """Pretraining first, then everything else (fine-tuning needs the generators)."""
    return [[r for r in runs if r.kind == "pretrain"], [r for r in runs if r.kind != "pretrain"]]


def _blocked(run, runs_dir, outcomes):
    if run.depends_on and run_status(Path(runs_dir) / run.depends_on) != "finished":
        return f"blocked (pretraining run {run.depends_on} is not finished: {outcomes.get(run.depends_on, 'not run')})"
    return None


def execute(runs, runs_dir="runs", command_builder=None, launcher="local", cluster=None, slurm=None, jobs=1,
            extend=()) -> dict:
    """Run every unfinished run, each after the pretraining run it depends on; return {run_id: outcome}.

    `command_builder(run, run_dir, resume) -> argv` defaults to the emlib CLI.
    `launcher` is `local` (here, `jobs` runs at a time) or `slurm` (one submitit job
    per run; `cluster="local"` uses submitit's local executor, for tests).
    Finished runs are skipped but for those in `extend` (`grid.extended_runs`), which resume to train longer.
    Outcomes are `skipped (finished)`, `finished`, `failed (...)` or `blocked (...)`.
    """
    command_builder = command_builder or build_command
    if launcher not in ("local", "slurm"):
        raise ValueError(f"launcher must be 'local' or 'slurm', got {launcher!r}")
    if launcher == "local":
        return _execute_local(runs, runs_dir, command_builder, max(1, int(jobs)), extend)
    outcomes = {}
    for stage in _stages(runs):
        todo = []
        for run in stage:
            if _done(run, runs_dir, extend):
                outcomes[run.run_id] = "skipped (finished)"
            elif blocked := _blocked(run, runs_dir, outcomes):
                outcomes[run.run_id] = blocked
            else:
                todo.append(run)
        outcomes.update(_execute_submitit(todo, runs_dir, command_builder, cluster, slurm or {}))
    return outcomes


def _execute_local(runs, runs_dir, command_builder, jobs: int, extend=()) -> dict:
    """Run up to `jobs` runs at once, in the listed order, each as soon as its dependency has finished."""
    with CHILDREN.forwarding_signals():
        return _run_local(runs, runs_dir, command_builder, jobs, extend)


def _run_local(runs, runs_dir, command_builder, jobs: int, extend=()) -> dict:
    outcomes, waiting, running = {}, [], {}
    for run in runs:
        if _done(run, runs_dir, extend):
            outcomes[run.run_id] = "skipped (finished)"
        else:
            waiting.append(run)
    pending_ids = {run.run_id for run in waiting}
    progress = tqdm(total=len(waiting), desc="sweep", unit="run", disable=not waiting)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        while waiting or running:
            for run in list(waiting):
                if len(running) >= jobs or CHILDREN.stopped_by:
                    break
                if run.depends_on in pending_ids:  # its pretraining run is still to come or running
                    continue
                waiting.remove(run)
                if blocked := _blocked(run, runs_dir, outcomes):
                    outcomes[run.run_id] = blocked
                    pending_ids.discard(run.run_id)
                    progress.update(1)
                    continue
                try:
                    argv, log = prepare(run, runs_dir, command_builder)
                except (OSError, ValueError) as err:  # e.g. the papermill notebook is missing
                    outcomes[run.run_id] = f"failed (could not prepare the run: {err})"
                    pending_ids.discard(run.run_id)
                    progress.update(1)
                    continue
                running[pool.submit(execute_command, argv, log)] = run
            if not running:
                if CHILDREN.stopped_by:
                    for run in waiting:
                        outcomes[run.run_id] = f"not started (the sweep was stopped by {CHILDREN.stopped_by})"
                    waiting.clear()
                continue  # only blocked runs were left; the loop ends
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                outcomes[run.run_id] = _outcome(Path(runs_dir) / run.run_id, future.result())
                pending_ids.discard(run.run_id)
                progress.update(1)
                tqdm.write(f"{run.run_id}: {outcomes[run.run_id]}")
    progress.close()
    return outcomes


def _execute_submitit(runs, runs_dir, command_builder, cluster, slurm):
    """Submit one job per run and wait for them all (the next stage needs them)."""
    import submitit

    if not runs:
        return {}
    executor = submitit.AutoExecutor(folder=Path(runs_dir) / "_submitit", cluster=cluster)
    jobs = {}
    for run in runs:
        argv, log = prepare(run, runs_dir, command_builder)
        executor.update_parameters(name=run.run_id, timeout_min=slurm.get("timeout_min", 24 * 60), nodes=1,
                                   tasks_per_node=1, gpus_per_node=run.gpus, cpus_per_task=slurm.get("cpus_per_task", 8),
                                   **{f"slurm_{k}": v for k, v in slurm.items() if k not in ("timeout_min", "cpus_per_task")})
        jobs[run.run_id] = executor.submit(execute_command, argv, log)
    outcomes = {}
    for run_id, job in tqdm(jobs.items(), desc="sweep jobs", unit="run"):
        try:
            exit_code = job.result()
        except Exception as err:  # the job itself died (node failure, timeout)
            outcomes[run_id] = f"failed (job {job.job_id}: {type(err).__name__})"
            continue
        outcomes[run_id] = _outcome(Path(runs_dir) / run_id, exit_code)
        tqdm.write(f"{run_id}: {outcomes[run_id]}")
    return outcomes


# ---------------------------------------------------------------- results


def aggregate(runs_dir="runs") -> dict:
    """Collect the `runs_dir/*/results.csv` of finished runs into `results_segmentation.csv` and
    `results_restoration.csv` in runs_dir (rewritten atomically); returns {path: rows}.

    These are the raw rows of every finished run (with run_id and seed), for other tools;
    nothing is pooled here. Means over seeds come from `summarize`. A run without
    summary.json (interrupted, diverged, running) is left out, and a line says how many."""
    runs_dir = Path(runs_dir)
    schemas = {"results_segmentation.csv": SEGMENTATION_COLUMNS, "results_restoration.csv": RESTORATION_COLUMNS}
    collected = {name: [] for name in schemas}
    paths = sorted(runs_dir.glob("*/results.csv"))
    unfinished = [path.parent.name for path in paths if run_status(path.parent) != "finished"]
    if unfinished:
        print(f"aggregate: left out {len(unfinished)} unfinished run(s) (no summary.json): {', '.join(unfinished[:5])}"
              f"{' ...' if len(unfinished) > 5 else ''}", file=sys.stderr)
    for path in (p for p in paths if p.parent.name not in unfinished):
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        name = next((n for n, columns in schemas.items() if header == columns), None)
        if name is None:
            print(f"aggregate: {path} has neither results schema; left out", file=sys.stderr)
            continue
        collected[name] += read_rows(path)
    written = {}
    for name, rows in collected.items():
        if not rows:
            continue
        write_rows(runs_dir / name, rows, schemas[name])
        written[str(runs_dir / name)] = len(rows)
    return written


def score(spec: dict, runs_dir, toy: bool = False) -> dict:
    """The spec's `scores:` beside the runs (emlib.scoring): `baselines` writes baselines.csv (Otsu and
    all-foreground on each segmentation dataset's test split), `cross_dataset` writes cross_dataset.csv
    (each finished full-label segmentation run on every other dataset's test split; runs already
    scored there are kept, not scored again). Returns {path: rows}."""
    from emlib import data, scoring

    wanted, runs_dir, written = spec.get("scores") or {}, Path(runs_dir), {}
    reads = segmentation_data(spec, toy)
    folders = {name: data.dataset_folder(name, root)[0] for name, (root, _) in reads.items()}
    if wanted.get("baselines"):
        rows = [row for name, folder in folders.items() for row in scoring.baselines(name, folder, downsample=reads[name][1])]
        write_rows(runs_dir / "baselines.csv", rows, scoring.BASELINE_COLUMNS)
        written[str(runs_dir / "baselines.csv")] = len(rows)
    if wanted.get("cross_dataset") and len(folders) > 1:
        path = runs_dir / "cross_dataset.csv"
        rows = read_rows(path) if path.is_file() else []
        done = {(row["run_id"], row["scored_on"]) for row in rows}
        for run_dir in sorted(p.parent for p in runs_dir.glob("*/best_model.safetensors")):
            summary_path, config = run_dir / "summary.json", json.loads((run_dir / "config.json").read_text())
            if not summary_path.is_file() or config.get("task") != "segmentation" or config.get("label_fraction", 1.0) != 1.0:
                continue
            summary = json.loads(summary_path.read_text())
            for other, folder in folders.items():
                if other == config["dataset"] or (run_dir.name, other) in done:
                    continue
                rows.append({"run_id": run_dir.name, "trained_on": config["dataset"], "scored_on": other,
                             "model": config["model"], "init": summary["init"], "head": config.get("head", ""),
                             "seed": config["seed"], "label_fraction": config.get("label_fraction", 1.0),
                             "dice_percent": round(scoring.cross_dataset_score(run_dir, other, folder), 4),
                             "own_test_dice_percent": summary.get("test_dice_percent")})
        write_rows(path, rows, scoring.CROSS_COLUMNS)
        written[str(path)] = len(rows)
    return written


def summarize(runs_dir="runs") -> str:
    """The finished runs under runs_dir, pooled over seeds only where their configs agree
    (`emlib.pooling.group_runs`): one line per configuration, per kind of task."""
    groups = group_runs(load_runs(runs_dir))
    parts = []
    for kind, metric in (("segmentation", "dice_percent"), ("restoration", "l1")):
        members = [group for group in groups if group.metric == metric]
        if members:
            parts.append(f"{kind}: {len(members)} configurations, {sum(len(g.runs) for g in members)} runs\n"
                         + summary_table(members))
    return "\n\n".join(parts) or f"no finished runs with results under {runs_dir}"


# ---------------------------------------------------------------- command line


def add_cli(subparsers):
    """Register `python -m emlib sweep`."""
    p = subparsers.add_parser("sweep", help="run the experiment grid of a YAML spec", description=__doc__.splitlines()[0])
    p.add_argument("spec", help="sweep YAML file, e.g. experiments/paper.yaml")
    p.add_argument("--dry-run", action="store_true", help="list the runs with estimated GPU time; run nothing")
    p.add_argument("--toy", action="store_true", help="CPU-sized synthetic version of the grid (the spec's toy: section)")
    p.add_argument("--only", metavar="REGEX", help="only runs whose id matches (plus the pretraining they need)")
    p.add_argument("--runner", choices=("cli", "papermill"), default="cli", help="emlib CLI or papermill notebooks")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local", help="run here, or one SLURM job per run (submitit)")
    p.add_argument("--runs-dir", help="folder of the run folders (default: the spec's runs_dir)")
    p.add_argument("--jobs", type=int, default=None, help="runs at a time with --launcher local (default: the spec's jobs, else 1)")
    p.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"), default=None,
                   help="submitit executor for --launcher slurm (default: auto-detect; 'local' runs jobs on this machine)")
    p.add_argument("--slurm-partition", help="SLURM partition")
    p.add_argument("--timeout-min", type=int, default=24 * 60, help="SLURM time limit per run, minutes")
    p.set_defaults(func=main)


def best_runs(runs_dir) -> dict:
    """{dataset: run folder}: the finished full-label fine-tuning run with the best validation score per dataset
    (chosen on validation, never on test; the head ablation's runs, which carry a generator's image head into
    segmentation, are not candidates), and {run id: folder} of every finished pretraining run."""
    best, scores = {}, {}
    for run in finished_runs(runs_dir):
        if run.kind == "pretrain":
            if run.weights.is_file():
                best[run.folder.name] = run.folder
            continue
        if run.fields.get("label_fraction", 1.0) != 1.0 or (run.fields.get("task") == "segmentation"
                                                             and run.fields.get("head") == "transfer"):
            continue
        metric = run.summary["metric"]
        score = run.summary[f"best_val_{metric}"] * (1 if metric == "dice_percent" else -1)
        dataset = run.fields["dataset"]
        if score > scores.get(dataset, -float("inf")):
            best[dataset], scores[dataset] = run.folder, score
    return best


def export_packages(runs_dir) -> list:
    """BioImage.IO packages of `best_runs` in runs_dir/bioimageio/<run id>.zip. Existing ones are kept; the package
    of a run that is no longer the best of its dataset (more runs finished since) is removed, so the folder holds
    exactly the best runs' packages."""
    folder, written = Path(runs_dir) / "bioimageio", []
    for run in best_runs(runs_dir).values():
        out = folder / f"{run.name}.zip"
        if not out.exists():
            bioimageio.export(run, out)
        written.append(out)
    for stale in sorted(set(folder.glob("*.zip")) - set(written)):
        if (Path(runs_dir) / stale.stem / "summary.json").is_file():  # a run's package, not a user's file
            print(f"removed {stale}: {stale.stem} is no longer its dataset's best run")
            stale.unlink()
    return written


def main(args) -> int:
    spec = load_spec(args.spec)
    runs_dir = Path(args.runs_dir or spec.get("runs_dir", "runs"))
    try:
        runs = select(expand_grid(spec, toy=args.toy, runs_dir=runs_dir), args.only, runs_dir)
    except (TypeError, KeyError, AttributeError) as err:  # a section of the wrong shape, a missing key
        raise ValueError(f"sweep spec {args.spec} is malformed ({type(err).__name__}: {err}); see experiments/paper.yaml") from None
    jobs = args.jobs or spec.get("jobs", 1)
    changed, extend = changed_runs(runs, runs_dir, args.toy), extended_runs(runs, runs_dir, args.toy)
    print(format_listing(runs, runs_dir, changed, toy=args.toy, hardware=spec.get("hardware", "GPU"), jobs=jobs,
                         extended=extend))
    to_run = runs if args.dry_run else [run for run in runs if not _done(run, runs_dir, extend)]
    errors, missing = check_configs(to_run, toy=args.toy)
    for data_root, run_ids in missing.items():
        print(f"{'warning' if args.dry_run else 'error'}: data_root {data_root} not found here ({len(run_ids)} run(s), "
              f"e.g. {run_ids[0]})", file=sys.stderr)
    if errors:
        raise ValueError(f"sweep spec {args.spec}: {len(errors)} run(s) would fail at their start: "
                         + "; ".join(errors[:5]) + (" ..." if len(errors) > 5 else ""))
    if changed and not args.dry_run:
        first, fields = next(iter(changed.items()))
        raise ValueError(f"sweep spec {args.spec}: {len(changed)} finished run(s) in {runs_dir} were made with another "
                         f"config than the spec's now, e.g. {first} ({'; '.join(fields[:4])}): the sweep would skip them "
                         "and report their old results. Move or delete those run folders (git history keeps committed "
                         "runs) to run them anew, or restore the spec (a finished run whose spec only raises its cap "
                         "resumes from its checkpoint.pt, where that is kept)")
    if args.dry_run:
        return 0
    if missing:
        raise FileNotFoundError(f"sweep spec {args.spec}: data_root not found: {', '.join(missing)}")
    with run_folder.lock_run_folder(runs_dir, holder="sweep"):
        return _run_sweep(args, spec, runs, runs_dir, jobs, extend)


def _run_sweep(args, spec, runs, runs_dir, jobs, extend=()) -> int:
    def command_builder(run, run_dir, resume):
        return build_command(run, run_dir, resume, toy=args.toy, runner=args.runner)

    slurm = {"timeout_min": args.timeout_min, **({"partition": args.slurm_partition} if args.slurm_partition else {})}
    start = time.time()
    outcomes = execute(runs, runs_dir, command_builder, launcher=args.launcher, cluster=args.submitit_cluster, slurm=slurm,
                       jobs=jobs, extend=extend)
    if CHILDREN.stopped_by:
        stopped = [f"  {run_id}: {outcome}" for run_id, outcome in outcomes.items() if outcome.startswith(("interrupted", "not"))]
        print(f"sweep stopped by {CHILDREN.stopped_by} after {time.time() - start:.0f} s; run the same command again "
              "to resume (finished runs are skipped, interrupted ones resume from their checkpoints)\n" + "\n".join(stopped))
        return 128 + signal.Signals[CHILDREN.stopped_by].value
    for path, n in aggregate(runs_dir).items():
        print(f"aggregated {n} rows into {path}")
    if spec.get("scores"):
        for path, n in score(spec, runs_dir, toy=args.toy).items():
            print(f"scored {n} rows into {path}")
    if spec.get("bioimageio") and not args.toy:
        for path in export_packages(runs_dir):
            print(f"BioImage.IO package: {path}")
    print(summarize(runs_dir))
    failed = {k: v for k, v in outcomes.items() if v.startswith(("failed", "blocked"))}
    print(f"sweep done in {time.time() - start:.0f} s: {len(outcomes) - len(failed)} ok, {len(failed)} failed")
    for run_id, outcome in failed.items():
        print(f"  {run_id}: {outcome}")
    return 1 if failed else 0
