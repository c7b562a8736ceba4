"""A run's life, the same for both loops (pretrain, finetune): what happens around one epoch.

    run(config, body, ...)    validate the config, check the files it names, open the
                              session (device, seeds, torchrun), lock the run folder, plan
                              a fresh start or a resume, seed, then body(config, ctx, resuming)
    Checkpoint                checkpoint.pt: named state holders (models, optimisers, the
                              scaler, the RNGs, the loop position, histories, the best model)
                              with the checks a resume needs (config, data, fast path)
    start_folder              every check has passed: only now does the run folder change
    interrupted / finish      the two ends: a checkpoint and a resume hint, or summary.json

The loops keep what is theirs: the config, the data, one epoch, evaluation and export.
"""
import json
import time
from pathlib import Path

import torch

from emlib import data, run_folder, session, training

CHECKPOINT_FORMAT = 2


def run(config, body, resume: bool, overwrite: bool, check_files=None) -> dict:
    """Run `body(config, ctx, resuming)` as a run: the config validated and the files it
    names checked (data_root; `check_files()` for more) before anything else, in a
    session, with the run folder locked (rank 0) and its plan made (`run_folder.plan_run`),
    every RNG seeded by config.seed. Returns what body returns (the summary)."""
    config.validate()
    data.check_data_root(config.data_root)  # the config holds values; the run checks the files they name
    if check_files is not None:
        check_files()
    with session.run_session(config.device, config.deterministic) as ctx:
        with run_folder.lock_run_folder(config.output_dir, enabled=ctx.is_main):
            resuming = run_folder.plan_run(config.output_dir, resume, overwrite, announce=ctx.is_main)
            session.seed_everything(config.seed)
            return body(config, ctx, resuming)


class _RandomState:
    """Every RNG of this process (Python, NumPy, torch, CUDA), as a checkpoint holder."""

    def state_dict(self) -> dict:
        return session.capture_rng_state()

    def load_state_dict(self, state: dict) -> None:
        session.restore_rng_state(state)


RNG = _RandomState()


class Checkpoint:
    """A run's checkpoint.pt: a dict of named state holders, saved and restored together.

    A holder is a model (saved unwrapped from DDP / compile), anything with
    state_dict / load_state_dict (optimisers, the grad scaler, `RNG`, a best model),
    a dict (the loop position) or a list of tuples (a history), both restored in
    place, or None (saved as {}, skipped on restore). The file's keys: format, config,
    data, fast_path, data_content, wall_s, then the holders' names in their order.

    `wall_s()` is the run's wall time across resumes: what the checkpoint it resumed
    from had run, plus this process's time, so a summary's wall_s is the whole run's.

    `data` is the fingerprint of the train data's items and `content` that of its
    bytes, which a resumed run must see again; `fast_path` the resolved autocast /
    channels_last mode (`training.fast_path_summary`); `may_grow` / `ignore`: config
    fields that may grow or change on resume (`run_folder.check_config_matches`).
    """

    def __init__(self, output_dir, config, holders: dict, *, data=None, fast_path=None, content=None,
                 may_grow=("epochs",), ignore=(), map_location="cpu"):
        self.path = Path(output_dir) / "checkpoint.pt"
        self.config, self.holders, self.map_location = config, holders, map_location
        self.data, self.fast_path, self.content = data, fast_path, content
        self.may_grow, self.ignore = may_grow, ignore
        self.started, self.wall_before = time.perf_counter(), 0.0

    def wall_s(self) -> float:
        """Seconds the run has taken, over all its processes (see the class docstring)."""
        return round(self.wall_before + time.perf_counter() - self.started, 3)

    def state(self) -> dict:
        """Everything a resumed run needs, as weights_only-safe containers."""
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "data": self.data,
                "fast_path": self.fast_path, "data_content": self.content, "wall_s": self.wall_s(),
                **{name: _state_of(holder) for name, holder in self.holders.items()}}

    def save(self, ctx) -> None:
        """Write the checkpoint (rank 0), then wait for every rank."""
        if ctx.is_main:
            run_folder.save_checkpoint(self.path, self.state())
        session.barrier()

    def restore(self) -> None:
        """Load the checkpoint into the holders; the optimisers get the config's lr.

        Refused (ValueError, before anything on disk changes) when the checkpoint's
        config differs (but for `may_grow` and `ignore`), its data fingerprints are not
        `data` and `content`, or it was written in another fast-path mode; a corrupt
        file, or one that does not fit the holders, raises run_folder.CheckpointError.
        """
        path, config = self.path, self.config
        state = run_folder.load_checkpoint(path, map_location=self.map_location, required=("config", *self.holders))
        run_folder.check_config_matches(state["config"], config.to_dict(), path, may_grow=self.may_grow, ignore=self.ignore)
        if self.data is not None:
            run_folder.check_data_matches(state.get("data"), self.data, path, config.data_root)
        if self.fast_path is not None:
            training.check_fast_path_matches(state.get("fast_path"), self.fast_path, path)
        if self.content is not None:
            run_folder.check_data_matches(state.get("data_content"), self.content, path, config.data_root)
        with run_folder.checkpoint_fits(path):
            for name, holder in self.holders.items():
                _load_into(holder, state[name])
        optimizers = [h for h in self.holders.values() if isinstance(h, torch.optim.Optimizer)]
        training.resume_lr(optimizers, state["config"].get("lr"), config.lr)
        self.wall_before = float(state.get("wall_s", self._finished_wall_s()))

    def _finished_wall_s(self) -> float:
        """The wall time of a checkpoint written before checkpoints kept it: a finished run's (summary.json, whose
        last checkpoint it is: a run extended to more epochs), else 0 (an interrupted run's time is lost)."""
        summary = self.path.parent / "summary.json"
        try:
            return float(json.loads(summary.read_text()).get("wall_s", 0.0))
        except (OSError, ValueError, AttributeError):
            return 0.0


def _state_of(holder):
    if holder is None:
        return {}
    if isinstance(holder, torch.nn.Module):
        return training.unwrap_model(holder).state_dict()
    if isinstance(holder, dict):
        return dict(holder)
    if isinstance(holder, list):
        return [list(item) for item in holder]
    return holder.state_dict()


def _load_into(holder, state) -> None:
    if holder is None:
        return
    if isinstance(holder, torch.nn.Module):
        training.unwrap_model(holder).load_state_dict(training.strip_module_prefix(state))
    elif isinstance(holder, dict):
        holder.clear()
        holder.update(state)
    elif isinstance(holder, list):
        holder[:] = [tuple(item) for item in state]
    else:
        holder.load_state_dict(state)


def start_folder(ctx, config, fast_path: dict) -> None:
    """Every check has passed (rank 0): say which fast path runs, and write config.json."""
    if ctx.is_main:
        session.note(training.describe_fast_path(fast_path, ctx.device))
        run_folder.start_run_folder(config.output_dir, config.to_dict())


def interrupted(ctx, stop, where: str, checkpoint: Checkpoint, **position) -> dict:
    """The summary of a run a signal stopped (its checkpoint saved): say how to resume (rank 0)."""
    if ctx.is_main:
        print(f"stopped by {stop.signal_name} {where}; resume with --resume (checkpoint: {checkpoint.path})")
    return {"status": "interrupted", "signal": stop.signal_name, **position,
            "output_dir": str(Path(checkpoint.config.output_dir))}


def finish(ctx, config, summary: dict, write_outputs) -> dict:
    """The end of a finished run: `write_outputs()` then summary.json, last (rank 0); returns the summary."""
    if ctx.is_main:
        write_outputs()
        run_folder.finish_run_folder(config.output_dir, summary)
    session.barrier()
    return summary
