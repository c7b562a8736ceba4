"""Our small real-data study (results/real_small): what its runs say about the paper's claims.

The runs are grouped by `emlib.pooling.group_runs` (pooled over seeds only when
everything else agrees). Two groups that differ only in their initialisation
ran the same seeds, so they are compared seed by seed: the mean of the paired
differences and its 95% Student t interval. A verdict is

    supports     the interval lies wholly on the side the paper's claim predicts
    contradicts  the interval lies wholly on the other side
    cannot tell  the interval contains 0

Each comparison also states its power: the smallest difference these seeds could have
detected (`detectable_difference`: 80 % power, two-sided 5 % level, from the spread of
the paired differences), so "cannot tell" reads as "no difference larger than this".
Every group is read against the training-free baselines of its dataset (emlib.scoring:
per-image Otsu, all-foreground; `baselines.csv`), in words: "beats Otsu", "does not
beat Otsu" or "ties with Otsu".

Epochs: "first" is the first evaluation, "last" the last one, and "mean" the
average over all evaluations (the area under the curve, a summary of speed).
"""
import collections
import json
import math
import statistics
from pathlib import Path

from emlib import inits, pooling, results, runs
from emlib.paper import CLAIMS
from emlib.run_folder import read_log, run_file

SUPPORTS, CONTRADICTS, CANNOT_TELL = "supports", "contradicts", "cannot tell"
STILL_LEARNING = "not compared: still learning"  # a run of either side set its best score in its last fifth


def load_groups(results_dir) -> list:
    """The finished runs under `results_dir`, grouped (see emlib.pooling.group_runs); [] when absent."""
    folders = results.results_folders(results_dir)
    return pooling.group_runs(pooling.load_runs(folders)) if folders else []


def describe(group) -> dict:
    """The axes of a fine-tuning group: dataset, model, init kind (random, GAN, L1-only), label fraction, and
    the output head of a pretrained init (reinit, transfer; None for runs that predate the choice)."""
    config = group.runs[0].fields
    return {"dataset": config.get("dataset"), "model": config.get("model"), "init": group.init_kind,
            "label_fraction": config.get("label_fraction", 1.0), "head": config.get("head")}


def find(groups, head="default", **axes):
    """The one group whose `describe` matches every given axis, or None. `head="default"` leaves out
    the head ablation (groups that carried the generator's head, "transfer"); name a head to pick it."""
    def head_matches(group):
        value = describe(group)["head"]
        return value != "transfer" if head == "default" else value == head

    matches = [g for g in groups if head_matches(g) and all(describe(g).get(k) == v for k, v in axes.items())]
    if len(matches) > 1:
        raise ValueError(f"{len(matches)} groups match {axes}: the runs differ in a setting the study does not vary")
    return matches[0] if matches else None


def per_seed(group, when: str, metric=None) -> dict:
    """{seed: the group's metric at the first or last evaluation, or averaged over all ("mean")}."""
    metric = metric or group.metric
    if when == "last":  # each seed at its own last evaluation, as the group's final score takes it
        return {row["seed"]: row[metric] for row in group.last_rows(metric)}
    by_seed = {}
    for row in group.rows():
        if row.get(metric) is not None:
            by_seed.setdefault(row["seed"], {})[row["epoch"]] = row[metric]
    pick = {"first": lambda c: c[min(c)], "mean": lambda c: statistics.fmean(c.values())}[when]
    return {seed: pick(curve) for seed, curve in by_seed.items()}


def paired_difference(a: dict, b: dict) -> tuple:
    """(mean, 95% CI half-width, n) of a[seed] - b[seed] over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two groups share no seed: they cannot be compared seed by seed")
    mean, half = pooling.mean_ci95([a[s] - b[s] for s in seeds])
    return mean, half if len(seeds) > 1 else math.inf, len(seeds)


def verdict(mean: float, half: float) -> str:
    """supports (interval above 0), contradicts (below 0) or cannot tell (contains 0)."""
    if mean - half > 0:
        return SUPPORTS
    if mean + half < 0:
        return CONTRADICTS
    return CANNOT_TELL


def learning_seeds(*groups) -> list:
    """Seeds of the groups' finished runs that were still learning when they stopped (`still_learning`)."""
    return sorted({run.seed for group in groups for run in group.runs
                   if run.finished and "best_epoch" in run.summary and still_learning(run.summary)})


def compare(better, worse, when: str) -> dict:
    """How far `better` is above `worse` (Dice points) at `when`, seed by seed, the verdict on "better > worse",
    and the smallest difference these seeds could have detected (`detectable`). Where the runs end ("mean",
    "last") is compared only when they plateaued: with a run of either side still learning, the verdict is
    STILL_LEARNING (`learning` names its seeds). The first evaluation, a fixed point early in training, is
    compared as it is."""
    a, b = per_seed(better, when), per_seed(worse, when)
    mean, half, n = paired_difference(a, b)
    seeds = sorted(set(a) & set(b))
    learning = learning_seeds(better, worse) if when != "first" else []
    return {"difference": mean, "ci95": half, "n": n, "verdict": plateau_verdict(mean, half, learning),
            "detectable": detectable_difference([a[s] - b[s] for s in seeds]), "learning": learning}


def plateau_verdict(mean: float, half: float, learning: list) -> str:
    """`verdict`, or STILL_LEARNING when `learning` names seeds that had not plateaued."""
    return STILL_LEARNING if learning else verdict(mean, half)


# t(0.80, df) for df = 1..10; beyond, z + (z^3 + z) / (4 df) with z = 0.8416 (error < 0.002)
_T80 = (1.3764, 1.0607, 0.9785, 0.9410, 0.9195, 0.9057, 0.8960, 0.8889, 0.8834, 0.8791)


def detectable_difference(differences) -> float:
    """The smallest mean paired difference a two-sided paired t test at the 5 % level detects with 80 %
    power, given the spread of these `differences`: (t_0.975 + t_0.80) * sd / sqrt(n) (inf for n < 2)."""
    n = len(differences)
    if n < 2:
        return math.inf
    sd = statistics.stdev(differences)
    df = n - 1
    t80 = _T80[df - 1] if df <= len(_T80) else 0.8416 + (0.8416 ** 3 + 0.8416) / (4 * df)
    return (pooling.t_quantile_975(df) + t80) * sd / math.sqrt(n)


def load_baselines(results_dir) -> dict:
    """{dataset: {baseline: test Dice}} from the study's baselines.csv (emlib.scoring); {} without one."""
    out = {}
    for folder in results.results_folders(results_dir):
        path = Path(folder) / "baselines.csv"
        if path.is_file():
            for row in results.read_rows(path):
                out.setdefault(row["dataset"], {})[row["baseline"]] = float(row["dice_percent"])
    return out


def against_baseline(group, baseline: float, when: str = "last") -> str:
    """"beats Otsu", "does not beat Otsu" or "ties with Otsu": the group's 95 % interval over seeds of its
    test Dice at `when`, wholly above, wholly below or around the baseline's score."""
    return against_otsu(list(per_seed(group, when).values()), baseline)


def against_otsu(scores, baseline: float) -> str:
    """The words of `against_baseline` for a list of per-seed scores."""
    mean, half = pooling.mean_ci95(scores)
    if mean - half > baseline:
        return "beats Otsu"
    if mean + half < baseline:
        return "does not beat Otsu"
    return "ties with Otsu"


def still_learning(summary: dict, last_fraction: float = 0.2) -> bool:
    """Whether a finished run set its best validation score in the last `last_fraction` of its training
    (it had not stopped learning when it stopped): the plateau rule of the study."""
    return summary["best_epoch"] > (1 - last_fraction) * summary["epochs"]


def plateau_count(results_dir, last_fraction: float = 0.2) -> dict:
    """How many finished fine-tuning runs set their best validation score before the last `last_fraction`
    of training (they had stopped learning): {"plateaued", "runs", "still_learning": [run ids],
    "late_gains": {run id: how much the last fraction raised the best validation score (its metric's units,
    better is positive)}, "datasets": {run id: dataset}} for the still-learning runs whose summary has its
    validation history, and "stopped": how many runs their own plateau stop ended (`FinetuneConfig.plateau_stop`)
    rather than their last epoch."""
    still, gains, datasets, total, stopped = [], {}, {}, 0, 0
    for folder in results.results_folders(results_dir):
        for run in runs.finished_runs(folder, kind="finetune"):
            summary, name = run.summary, run.folder.name
            if "best_epoch" not in summary:
                continue
            total += 1
            stopped += bool(summary.get("stopped_at_plateau"))
            if still_learning(summary, last_fraction):
                still.append(name)
                cut = (1 - last_fraction) * summary["epochs"]
                history = summary.get("val_history") or []
                sign = 1 if summary.get("metric", "dice_percent") == "dice_percent" else -1
                before = [sign * score for epoch, score in history if epoch <= cut]
                after = [sign * score for epoch, score in history if epoch > cut]
                if before and after:
                    gains[name], datasets[name] = max(after) - max(before), summary.get("dataset")
    return {"plateaued": total - len(still), "runs": total, "still_learning": still, "late_gains": gains,
            "datasets": datasets, "stopped": stopped}


def plateau_text(count: dict, target: float = 0.8) -> str:
    """`plateau_count` in words: the count against its target, and what the still-learning runs gained."""
    if not count["runs"]:
        return "plateau count: no fine-tuning run finished yet"
    share = count["plateaued"] / count["runs"]
    text = (f"{count['plateaued']} of {count['runs']} finished fine-tuning runs ({share:.0%}) set their best validation "
            f"score before the last fifth of their training ({'meets' if share >= target else 'short of'} the "
            f"{target:.0%} the study aims for)")
    if count.get("stopped"):
        text += (f"; {count['stopped']} of the {count['runs']} ended at their own plateau stop (lr dropped, then no better score in "
                 "their last quarter), the others at their last epoch")
    gains = sorted(count["late_gains"].values())
    if gains:
        big = collections.Counter(count["datasets"][run] for run, gain in count["late_gains"].items() if gain > 1)
        where = f" ({', '.join(f'{n} on {dataset}' for dataset, n in big.most_common())})" if big else ""
        text += (f"; the last fifth raised the others' best validation score by a median of {gains[len(gains) // 2]:.2f} "
                 f"points, and by more than 1 point in {sum(big.values())} of {len(gains)}{where}: those were still learning")
    return text


def setbacks(group) -> dict:
    """{seed: total setback of the validation Dice curve}: the sum of every drop between evaluations."""
    out = {}
    for run in group.runs:
        path = Path(run.folder) / "validation.csv"
        if path.is_file() and run.seed not in out:
            values = [float(r["dice_percent"]) for r in results.read_rows(path)]
            out[run.seed] = sum(max(0.0, a - b) for a, b in zip(values, values[1:]))
    return out


def mean_summary(group, key: str) -> float:
    """The mean over a group's finished runs of a number in their summary.json (e.g. best_val_dice_percent)."""
    return statistics.fmean(run.summary[key] for run in group.runs if run.finished)


def final_train_loss(group) -> float:
    """Mean over the group's runs of the training loss in each run's last logged epoch: how far its
    step budget fitted its own training images (a larger training set fitted less is underfit, not worse)."""
    losses = []
    for run in group.runs:
        log = read_log(run_file(run.folder, "log.csv"))
        last = log["epoch"] == log["epoch"].max()
        losses.append(float(log["train_loss"][last].mean()))
    return statistics.fmean(losses)


def _text(comparisons: list) -> tuple:
    """(overall verdict over the comparisons that were made, one line per comparison)."""
    verdicts = {c["verdict"] for c in comparisons} - {STILL_LEARNING} or {STILL_LEARNING}
    overall = verdicts.pop() if len(verdicts) == 1 else "mixed"
    lines = [f"{c['what']}: {c['difference']:+.1f} ± {c['ci95']:.1f} (n={c['n']}"
             + (f"; detectable ≥ {c['detectable']:.1f}" if "detectable" in c else "") + f") → {c['verdict']}"
             + (f" (seeds {', '.join(map(str, c['learning']))})" if c.get("learning") else "") for c in comparisons]
    return overall, lines


def _not_measured(claim: str, models) -> str:
    if "HRNet" not in claim:
        return "not measured"
    if any(m.startswith("hrnet") for m in models):
        return "not measured: no GAN-pretrained HRNet run has finished"
    return "not measured: the study has no HRNet"


def claims_evidence(groups) -> list:
    """For each of the paper's claims (emlib.paper.CLAIMS) and the L1-only ablation: what our real runs say.

    Returns [{"claim", "verdict", "details": [lines]}]; comparisons are made per dataset
    at full labels, for each model the study pretrained.
    """
    full = [g for g in groups if describe(g)["label_fraction"] == 1.0 and g.metric == "dice_percent"]
    datasets = sorted({describe(g)["dataset"] for g in full})
    models = sorted({describe(g)["model"] for g in full})
    helps, small, hrnet, stable, adversarial, head = [], [], [], [], [], []
    for dataset in datasets:
        for model in models:
            random, gan = find(full, dataset=dataset, model=model, init="random"), find(full, dataset=dataset, model=model, init="GAN")
            if random and gan:
                for when in ("first", "mean", "last"):
                    helps.append({"what": f"{dataset}, {model}, GAN - random, {when}", **compare(gan, random, when)})
                mean, half, n = paired_difference(setbacks(random), setbacks(gan))
                learning = learning_seeds(random, gan)
                stable.append({"what": f"{dataset}, {model}, setback random - GAN", "difference": mean, "ci95": half, "n": n,
                               "verdict": plateau_verdict(mean, half, learning), "learning": learning})
            l1 = find(full, dataset=dataset, model=model, init="L1-only")
            if gan and l1:
                for when in ("first", "last"):
                    adversarial.append({"what": f"{dataset}, {model}, GAN - L1-only, {when}", **compare(gan, l1, when)})
            carried = find(full, head="transfer", dataset=dataset, model=model, init="GAN")
            if gan and carried:
                for when in ("first", "last"):
                    head.append({"what": f"{dataset}, {model}, fresh head - carried head, {when}", **compare(gan, carried, when)})
        for h in [m for m in models if m.startswith("hrnet")]:
            pretrained_hrnet = find(full, dataset=dataset, model=h, init="GAN")
            rivals = [find(full, dataset=dataset, model=h, init="random")]
            rivals += [find(full, dataset=dataset, model=m, init=i) for m in models if m.startswith("unet_")
                       for i in ("random", "GAN")]
            for rival in filter(None, rivals if pretrained_hrnet else []):
                hrnet.append({"what": f"{dataset}, {h} GAN - {describe(rival)['model']} {describe(rival)['init']}, last",
                              **compare(pretrained_hrnet, rival, "last")})
        small_gan = [find(full, dataset=dataset, model=m, init="GAN") for m in models if m.startswith("unet_2_")]
        large_random = [find(full, dataset=dataset, model=m, init="random") for m in models if m.startswith("unet_4_")]
        for a in filter(None, small_gan):
            for b in filter(None, large_random):
                for when in ("first", "last"):
                    small.append({"what": f"{dataset}, {describe(a)['model']} GAN - {describe(b)['model']} random, {when}",
                                  **compare(a, b, when)})
    out = []
    for claim, comparisons in zip(CLAIMS, (helps, small, hrnet, stable)):
        if comparisons:
            overall, lines = _text(comparisons)
        else:
            overall, lines = CANNOT_TELL, [_not_measured(claim, models)]
        out.append({"claim": claim, "verdict": overall, "details": lines})
    if adversarial:
        overall, lines = _text(adversarial)
        out.append({"claim": "(ours) The adversarial loss matters: GAN pretraining beats L1-only pretraining.",
                    "verdict": overall, "details": lines})
    if head:
        overall, lines = _text(head)
        out.append({"claim": "(ours) Re-initialising the generator's output head beats carrying it into segmentation.",
                    "verdict": overall, "details": lines})
    return out


def pretraining_runs(results_dir) -> dict:
    """{label: run folder} of the finished pretraining runs of the study (those with a generator export)."""
    return {run.folder.name.removeprefix("pretrain-"): run.folder for folder in results.results_folders(results_dir)
            for run in runs.finished_runs(folder, kind="pretrain") if run.weights.is_file()}


FLATTENED_RULE = ("flattened: the mean validation L1 of the curve's last quarter is not lower than that of the "
                  "quarter before by more than two standard errors of the difference (the curve's own scatter) "
                  "or 5 % of the whole curve's drop")


def curve_flattened(curve) -> bool:
    """Whether a validation-loss curve has flattened, by FLATTENED_RULE (a curve of fewer than 8 points cannot say: False)."""
    curve = [float(v) for v in curve]
    quarter = len(curve) // 4
    if quarter < 2:
        return False
    before, late = curve[-2 * quarter:-quarter], curve[-quarter:]
    gain = statistics.fmean(before) - statistics.fmean(late)
    scatter = math.sqrt((statistics.variance(before) + statistics.variance(late)) / quarter)
    drop = statistics.fmean(curve[:quarter]) - statistics.fmean(late)
    return gain < max(2 * scatter, 0.05 * drop)


def val_improvement(run_folder) -> dict:
    """A pretraining run's last validation L1 against its identity baseline, and whether the curve had flattened
    (`curve_flattened`)."""
    summary = json.loads((Path(run_folder) / "summary.json").read_text())
    curve = read_log(run_file(run_folder, "validation.csv"))["val_l1"]
    return {"final_val_l1": summary["final_val_l1"], "identity_val_l1": summary["identity_val_l1"],
            "ratio": summary["final_val_l1"] / summary["identity_val_l1"],
            "flattened": curve_flattened(curve), "steps": summary["steps"]}


def provenance_summary(results_dir) -> dict:
    """What ran, where and from which code: counts, total and per-kind wall time, commits, machines and
    precisions (`precision_text`) of the finished runs under `results_dir` (from their summary.json files)."""
    names = {"pretrain": "pretraining", "finetune": "fine-tuning"}
    finished = [(names[run.kind], run.summary) for folder in results.results_folders(results_dir)
                for run in runs.finished_runs(folder)]
    machines = {(s.get("machine") or {}).get("cpu", "unknown") + (f", GPU {s['machine']['gpu']}" if (s.get("machine") or {}).get("gpu") else "")
                for _, s in finished}
    return {
        "runs": {kind: sum(k == kind for k, _ in finished) for kind in ("pretraining", "fine-tuning")},
        "wall_hours": {kind: sum(s.get("wall_s", 0) for k, s in finished if k == kind) / 3600 for kind in ("pretraining", "fine-tuning")},
        "commits": sorted({s.get("commit") or "unknown" for _, s in finished}),
        "machines": sorted(machines),
        "threads": sorted({(s.get("machine") or {}).get("torch_threads") for _, s in finished} - {None}),
        "precision": precision_text(s for _, s in finished),
    }


# ---------------------------------------------------------------- the study's design and its table, as the runs record them

def pretraining_design(results_dir) -> dict:
    """{label: one row} of the study's finished pretraining runs, read from their config, summary and manifest:
    network, objective, steps, crop, batch, lr, patches per split, final validation L1 against the identity's (its change, signed), and whether the
    validation curve had flattened (`curve_flattened`)."""
    out = {}
    for label, folder in pretraining_runs(results_dir).items():
        run, v = runs.read(folder), val_improvement(folder)
        manifest = Path(folder) / "manifest.json"
        split = json.loads(manifest.read_text()) if manifest.is_file() else {}
        out[label] = {"model": run.fields["model"], "objective": "GAN" if run.fields.get("adv_weight", 1.0) > 0 else "L1-only",
                      "steps": v["steps"], "crop (px)": run.fields["image_size"], "batch": run.fields["batch_size"],
                      "lr": run.fields["lr"], "patches train / val / test": " / ".join(str(len(split[k])) for k in ("train", "val", "test"))
                      if all(isinstance(split.get(k), list) for k in ("train", "val", "test")) else None,
                      "final val L1": v["final_val_l1"],
                      "identity val L1": v["identity_val_l1"], "vs identity": f"{v['ratio'] - 1:+.0%}",
                      "flattened": v["flattened"]}
    return out


def pretrained_against_random(results_dir, groups) -> dict:
    """{"dataset, model": row} for each full-label setting with random and GAN-pretrained runs: what its GAN
    generator had learnt (final validation L1 against the identity's, `pretraining_design`) beside the paired
    test-Dice difference GAN - random at the first and the last evaluation, and the seeds still learning. It puts
    a pretrained init that trails its random twin next to the cause to look at first: a generator that did not
    learn to restore."""
    generators = {row["model"]: row for row in pretraining_design(results_dir).values() if row["objective"] == "GAN"}
    full = [g for g in groups if describe(g)["label_fraction"] == 1.0]
    out = {}
    for dataset in sorted({describe(g)["dataset"] for g in full}):
        for model, generator in generators.items():
            random, gan = (find(full, dataset=dataset, model=model, init=i) for i in ("random", "GAN"))
            if random and gan:
                row = {"generator's val L1 vs identity": generator["vs identity"]}
                for when in ("first", "last"):
                    mean, half, n = paired_difference(per_seed(gan, when), per_seed(random, when))
                    row[f"GAN - random, {when} (Dice points)"] = f"{mean:+.1f} ± {half:.1f} (n = {n})"
                row["seeds still learning"] = " ".join(map(str, learning_seeds(random, gan))) or "none"
                out[f"{dataset}, {model}"] = row
    return out


def _label(dataset, model, init, head=None, label_fraction=1.0) -> str:
    carried = " (carried head)" if head == "transfer" else ""
    labels = "" if label_fraction == 1.0 else f", {label_fraction:.0%} labels"
    return f"{dataset}, {model}, {init}{carried}{labels}"


def setting_label(group) -> str:
    """A group's axes in words: "emps, unet_2_44, GAN (carried head), 50% labels"."""
    return _label(**describe(group))


def planned_settings(grid) -> dict:
    """{setting label: planned seeds} of a sweep grid's segmentation runs (`emlib.grid.expand_grid`), in the
    grid's order, labelled as `setting_label` labels the finished groups: what is missing has not finished yet."""
    objectives = {run.run_id: "GAN" if run.config.get("adv_weight", 1.0) > 0 else "L1-only"
                  for run in grid if run.kind == "pretrain"}
    out = {}
    for run in grid:
        if run.kind == "finetune" and run.task == "segmentation":
            config = run.config
            init = inits.RANDOM if run.depends_on is None else objectives[run.depends_on]
            label = _label(config["dataset"], config["model"], init, config.get("head"), config.get("label_fraction", 1.0))
            out.setdefault(label, []).append(config["seed"])
    return out


def precision(summary: dict) -> str:
    """The arithmetic a run trained in, as its summary's fast_path records it: "bf16 autocast", "fp16 autocast"
    or "fp32" (amp "auto" resolves by processor, so one config can give either)."""
    amp = (summary.get("fast_path") or {}).get("amp")
    return {None: "fp32", "bfloat16": "bf16 autocast", "float16": "fp16 autocast"}.get(amp, str(amp))


def precision_text(summaries) -> str:
    """The precisions of a set of runs: one name, or each with its count ("bf16 autocast 3, fp32 2")."""
    counts = collections.Counter(precision(summary) for summary in summaries)
    if len(counts) < 2:
        return next(iter(counts), "")
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


def finetuning_design(groups) -> dict:
    """{setting label: row} of the fine-tuning groups' schedules, read from their configs and summaries: epochs
    x steps an epoch (at most, and as run), image scale, crop, batch, lr and its drops, the stop, the evaluation
    cadence, the precision the runs trained in and the seeds that finished."""
    out = {}
    for group in groups:
        config = group.runs[0].fields
        steps = -(-config["epoch_size"] // config["batch_size"]) if isinstance(config.get("epoch_size"), int) else None
        dense, every = config.get("eval_dense_epochs", 0), config.get("eval_every", 1)
        run_epochs = sorted(run.summary["epochs"] for run in group.runs if run.finished)
        out[setting_label(group)] = {
            "epochs x steps": f"{config['epochs']} x {steps}" if steps else f"{config['epochs']} epochs",
            "epochs run": (f"{run_epochs[0]}-{run_epochs[-1]}" if run_epochs and run_epochs[0] != run_epochs[-1]
                           else str(run_epochs[0]) if run_epochs else ""),
            "image scale": f"1/{config.get('downsample', 1)}", "crop (px)": config.get("crop"),
            "batch": config.get("batch_size"), "lr": schedule_text(config),
            "evaluated": (f"epochs 1-{dense}, then every {every}" if dense else
                          "every epoch" if every == 1 else f"every {every} epochs"),
            "precision": precision_text(run.summary for run in group.runs if run.finished),
            "seeds": ", ".join(str(s) for s in group.seeds)}
    return out


def schedule_text(config: dict) -> str:
    """The lr schedule and stop of a fine-tuning config in words (`FinetuneConfig.lr_drops`, `plateau_stop`)."""
    text = f"{config.get('lr')}"
    if config.get("lr_drops"):
        text += f", /10 up to {config['lr_drops']}x after {config['patience']} epochs without a better score"
    if config.get("plateau_stop"):
        text += (f"; stops once its last {config['plateau_stop']:.0%} of epochs brought none"
                 f" (not before epoch {config.get('min_epochs', 0)})")
    return text


def baseline_table(groups, baselines: dict) -> dict:
    """{setting label: row} for each group: mean test Dice at the last evaluation with its 95 % interval and
    seeds, the dataset's Otsu and all-foreground Dice (`load_baselines`), the words of `against_baseline`
    ("no baseline" where baselines.csv lacks the dataset) and how many of its seeds were still learning."""
    out = {}
    for group in groups:
        scores = list(per_seed(group, "last").values())
        mean, half = pooling.mean_ci95(scores)
        dataset = baselines.get(describe(group)["dataset"], {})
        out[setting_label(group)] = {
            "test Dice, last evaluation": (mean, half, len(scores)), "Otsu": dataset.get("otsu"),
            "all-foreground": dataset.get("all_foreground"),
            "against Otsu": against_baseline(group, dataset["otsu"]) if "otsu" in dataset else "no baseline",
            "seeds still learning": f"{len(learning_seeds(group))} of {len(scores)}"}
    return out


def cross_dataset_table(results_dir, baselines: dict) -> dict:
    """{"trained_on -> scored_on, model, init": row} from the study's cross_dataset.csv: mean Dice on the other
    dataset's test split with its 95 % interval and seeds, the same runs' Dice on their own test split, the
    target dataset's Otsu and the words of `against_otsu` there; {} without the file."""
    rows = [row for folder in results.results_folders(results_dir) for row in
            (results.read_rows(Path(folder) / "cross_dataset.csv") if (Path(folder) / "cross_dataset.csv").is_file() else [])]
    grouped = {}
    for row in rows:
        head = " (carried head)" if row.get("head") == "transfer" else ""
        key = f"{row['trained_on']} -> {row['scored_on']}, {row['model']}, {inits.kind(row['init'])}{head}"
        grouped.setdefault(key, []).append(row)
    out = {}
    for key, members in sorted(grouped.items()):
        scored = [float(r["dice_percent"]) for r in members]
        own = [float(r["own_test_dice_percent"]) for r in members if r.get("own_test_dice_percent") not in (None, "")]
        otsu = baselines.get(members[0]["scored_on"], {}).get("otsu")
        out[key] = {"Dice on the other dataset": (*pooling.mean_ci95(scored), len(scored)),
                    "Dice on its own dataset": (*pooling.mean_ci95(own), len(own)) if own else None,
                    "Otsu on the other dataset": otsu,
                    "against Otsu there": against_otsu(scored, otsu) if otsu is not None else "no baseline"}
    return out
