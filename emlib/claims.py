"""The paper's claims (emlib.paper.CLAIMS) computed from any results rows: the paper's own or our runs'.

Rows are plain dicts with the columns of `emlib.results`; `curves` and `final_table`
summarise them by (dataset or task, model, init, source), and `check_claims` counts
how often each claim holds.
"""
import statistics
from collections import defaultdict

from emlib.pooling import mean_ci95
from emlib.inits import is_pretrained
from emlib.paper import CLAIMS


def curves(rows, metric: str, group: str = "dataset") -> dict:
    """Mean curve per (group, model, init, source): {key: {epoch: (mean, ci95, n_seeds)}}.

    `group` is `dataset` for segmentation rows and `task` for restoration rows;
    several rows for one epoch (seeds) are averaged with a 95% interval.
    """
    values = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get(metric) is None:
            continue
        key = (row[group], row["model"], row["init"], row.get("source") or "paper")
        values[key][row["epoch"]].append(row[metric])
    return {key: {epoch: (*mean_ci95(v), len(v)) for epoch, v in sorted(by_epoch.items())}
            for key, by_epoch in values.items()}


def final_table(rows, metric: str, group: str = "dataset", with_ci: bool = False) -> dict:
    """The paper's table layout at the last epoch: {group: {model: {init: mean}}}.

    With `with_ci`, each cell is (mean, ci95 half-width, number of seeds). Pass
    rows in which each cell is one experiment: rows of one source and label
    fraction are pooled. For our runs, pass the rows of one setting of
    `emlib.results.settings` (one group of seeds per cell).
    """
    table = defaultdict(lambda: defaultdict(dict))
    for (name, model, init, _), curve in curves(rows, metric, group).items():
        last = curve[max(curve)]
        table[name][model][init] = last if with_ci else last[0]
    return {name: dict(models) for name, models in table.items()}


def _mean_curves(rows, metric, group):
    """{(group, model, init): {epoch: mean}} pooled over sources and seeds."""
    pooled = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get(metric) is not None:
            pooled[(row[group], row["model"], row["init"])][row["epoch"]].append(row[metric])
    return {key: {e: sum(v) / len(v) for e, v in sorted(c.items())} for key, c in pooled.items()}


def _pretrained_mean(curve_by_init, epoch_pick):
    values = [epoch_pick(c) for init, c in curve_by_init.items() if is_pretrained(init)]
    return sum(values) / len(values) if values else None


def _first(curve):
    return curve[min(curve)]


def _last(curve):
    return curve[max(curve)]


def _setback(curve, higher_is_better):
    """Total amount by which a curve moves the wrong way between evaluations."""
    values = [curve[e] for e in sorted(curve)]
    sign = 1 if higher_is_better else -1
    return sum(max(0.0, sign * (a - b)) for a, b in zip(values, values[1:]))


def _mean_over_epochs(curve):
    return sum(curve.values()) / len(curve)


def _by_group_model(curve_map):
    grouped = defaultdict(dict)
    for (name, model, init), curve in curve_map.items():
        grouped[(name, model)][init] = curve
    return grouped


def claim_pretraining_helps(curve_map, higher_is_better=True):
    """Count (group, model) pairs where the mean over pretrained inits beats random,
    at the first evaluated epoch, the last one, and averaged over all epochs."""
    sign = 1 if higher_is_better else -1
    counts = {"first": 0, "last": 0, "mean": 0, "pairs": 0}
    for by_init in _by_group_model(curve_map).values():
        if "random" not in by_init or not any(map(is_pretrained, by_init)):
            continue
        counts["pairs"] += 1
        for name, pick in (("first", _first), ("last", _last), ("mean", _mean_over_epochs)):
            counts[name] += sign * (_pretrained_mean(by_init, pick) - pick(by_init["random"])) > 0
    return counts


def claim_small_pretrained_match_large(curve_map, tolerance=1.0):
    """Per dataset: does the best pretrained 2-block U-Net come within `tolerance`
    Dice points of (or beat) the best random 4-block U-Net, at the first and last epoch?"""
    counts = {"first": 0, "last": 0, "datasets": 0}
    for dataset in sorted({key[0] for key in curve_map}):
        small = [c for (d, m, i), c in curve_map.items() if d == dataset and m.startswith("U-Net_2_") and is_pretrained(i)]
        large = [c for (d, m, i), c in curve_map.items() if d == dataset and m.startswith("U-Net_4_") and i == "random"]
        if not small or not large:
            continue
        counts["datasets"] += 1
        for name, pick in (("first", _first), ("last", _last)):
            counts[name] += max(map(pick, small)) >= max(map(pick, large)) - tolerance
    return counts


def claim_pretrained_hrnet_best(curve_map):
    """Per dataset: is every pretrained HRNet, at the last epoch, above the random
    HRNet and above every U-Net (any init)?"""
    counts = {"last": 0, "datasets": 0}
    for dataset in sorted({key[0] for key in curve_map}):
        hrnet_p = [_last(c) for (d, m, i), c in curve_map.items() if d == dataset and m == "HRNet" and is_pretrained(i)]
        others = [_last(c) for (d, m, i), c in curve_map.items()
                  if d == dataset and (m != "HRNet" or i == "random")]
        if not hrnet_p or not others:
            continue
        counts["datasets"] += 1
        counts["last"] += min(hrnet_p) > max(others)
    return counts


def claim_more_stable(curve_map, higher_is_better=True):
    """Count (group, model) pairs whose mean setback over pretrained inits is smaller
    than the random init's setback (`_setback`: sum of moves the wrong way)."""
    counts = {"stable": 0, "pairs": 0}
    for by_init in _by_group_model(curve_map).values():
        if "random" not in by_init or not any(map(is_pretrained, by_init)):
            continue
        counts["pairs"] += 1
        pretrained = _pretrained_mean(by_init, lambda c: _setback(c, higher_is_better))
        counts["stable"] += pretrained < _setback(by_init["random"], higher_is_better)
    return counts


NOT_MEASURED = "not measured: these results lack the models or initialisations this claim compares"


def _join(parts):
    parts = [p for p in parts if p]
    return "; ".join(parts) if parts else NOT_MEASURED


def check_claims(segmentation_rows, restoration_rows) -> list:
    """The paper's four claims, each with what the given rows show.

    Returns one dict per claim: `claim` (the paper's statement) and `evidence`
    (a sentence with the counts), plus the raw counts under `segmentation` and
    `restoration`. Rows of any source work; a claim the rows cannot test says
    "not measured".
    """
    seg = _mean_curves(segmentation_rows, "dice_percent", "dataset")
    res = _mean_curves(restoration_rows, "l1", "task")
    helps_seg, helps_res = claim_pretraining_helps(seg), claim_pretraining_helps(res, higher_is_better=False)
    small = claim_small_pretrained_match_large(seg)
    hrnet = claim_pretrained_hrnet_best(seg)
    stable_seg, stable_res = claim_more_stable(seg), claim_more_stable(res, higher_is_better=False)

    helps = _join([
        helps_seg["pairs"] and f"mean of pretrained inits beats random in {helps_seg['first']}/{helps_seg['pairs']} (dataset, model) pairs "
                               f"at the first evaluation, {helps_seg['last']}/{helps_seg['pairs']} at the last and "
                               f"{helps_seg['mean']}/{helps_seg['pairs']} averaged over all evaluations",
        helps_res["pairs"] and f"TEMImageNet tasks: {helps_res['first']}/{helps_res['pairs']} first, "
                               f"{helps_res['last']}/{helps_res['pairs']} last, {helps_res['mean']}/{helps_res['pairs']} averaged"])
    small_text = _join([small["datasets"] and
                        f"best pretrained 2-block U-Net within 1 Dice point of, or above, the best random 4-block U-Net in "
                        f"{small['first']}/{small['datasets']} datasets at the first evaluation and {small['last']}/{small['datasets']} at the last"])
    hrnet_text = _join([hrnet["datasets"] and
                        f"every pretrained HRNet above random HRNet and every U-Net at the last evaluation in {hrnet['last']}/{hrnet['datasets']} datasets"])
    stable = _join([
        stable_seg["pairs"] and f"pretrained curves have a smaller total setback than random in {stable_seg['stable']}/{stable_seg['pairs']} (dataset, model) pairs",
        stable_res["pairs"] and f"TEMImageNet tasks: {stable_res['stable']}/{stable_res['pairs']}"])
    return [
        {"claim": CLAIMS[0], "segmentation": helps_seg, "restoration": helps_res, "evidence": helps},
        {"claim": CLAIMS[1], "segmentation": small, "restoration": None, "evidence": small_text},
        {"claim": CLAIMS[2], "segmentation": hrnet, "restoration": None, "evidence": hrnet_text},
        {"claim": CLAIMS[3], "segmentation": stable_seg, "restoration": stable_res, "evidence": stable},
    ]


# The comparisons that "small pretrained U-Nets match or beat larger random ones" can mean:
# (name, small models' prefix, how the small pretrained are summarised, how the large random are summarised).
SMALL_VS_LARGE_VARIANTS = (
    ("best pretrained 2-block vs best random 4-block", "U-Net_2_", max, max),
    ("best pretrained 3-block vs best random 4-block", "U-Net_3_", max, max),
    ("mean pretrained 2-block vs mean random 4-block", "U-Net_2_", statistics.fmean, statistics.fmean),
    ("best pretrained 2-block vs worst random 4-block", "U-Net_2_", max, min),
)


def small_vs_large_variants(segmentation_rows, tolerance=1.0) -> list:
    """Claim 2 under each reading of SMALL_VS_LARGE_VARIANTS: per variant, in how many
    datasets the small pretrained U-Nets come within `tolerance` Dice points of (or beat)
    the large random ones, at the first and at the last evaluation.

    Returns [{"variant", "first", "last", "datasets"}]. The verdict depends on the
    reading: the paper's sentence names no comparison.
    """
    curve_map = _mean_curves(segmentation_rows, "dice_percent", "dataset")
    out = []
    for name, prefix, small_pick, large_pick in SMALL_VS_LARGE_VARIANTS:
        counts = {"variant": name, "first": 0, "last": 0, "datasets": 0}
        for dataset in sorted({key[0] for key in curve_map}):
            small = [c for (d, m, i), c in curve_map.items() if d == dataset and m.startswith(prefix) and is_pretrained(i)]
            large = [c for (d, m, i), c in curve_map.items() if d == dataset and m.startswith("U-Net_4_") and i == "random"]
            if not small or not large:
                continue
            counts["datasets"] += 1
            for when, pick in (("first", _first), ("last", _last)):
                counts[when] += small_pick([pick(c) for c in small]) >= large_pick([pick(c) for c in large]) - tolerance
        out.append(counts)
    return out
