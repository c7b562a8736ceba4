"""emlib.study: paired comparisons over seeds and the verdicts on the paper's claims."""
import json

import pytest

from emlib import study
from emlib.results import SEGMENTATION_COLUMNS, append_rows


def write_run(root, name, init, seed, curve, dataset="emps", model="unet_2_44", fraction=1.0, validation=None):
    folder = root / name
    folder.mkdir(parents=True)
    tag = {"random": "random", "gan": "pretrained", "l1": "pretrained-L1"}[init]
    config = {"task": "segmentation", "dataset": dataset, "model": model, "seed": seed, "label_fraction": fraction,
              "init": "random" if init == "random" else f"pre-{init}/generator.safetensors", "epochs": len(curve),
              "output_dir": str(folder)}
    (folder / "config.json").write_text(json.dumps(config))
    rows = [{**dict.fromkeys(SEGMENTATION_COLUMNS, ""), "dataset": dataset, "model": "U-Net_2_44", "init": tag,
             "epoch": epoch, "dice_percent": value, "seed": seed, "label_fraction": fraction, "source": "real",
             "run_id": name} for epoch, value in enumerate(curve, start=1)]
    append_rows(folder / "results.csv", rows, SEGMENTATION_COLUMNS)
    append_rows(folder / "validation.csv", [dict(r, dice_percent=v) for r, v in zip(rows, validation or curve)],
                SEGMENTATION_COLUMNS)
    (folder / "summary.json").write_text("{}")


@pytest.fixture
def runs(tmp_path):
    for seed, noise in enumerate((0.0, 0.4, -0.3)):
        write_run(tmp_path, f"r{seed}", "random", seed, [10 + noise, 40 + noise, 70 + noise],
                  validation=[10, 30, 20, 60])  # setbacks: 10
        write_run(tmp_path, f"g{seed}", "gan", seed, [50 + noise, 65, 71 + noise], validation=[50, 60, 70])
        write_run(tmp_path, f"l{seed}", "l1", seed, [50 - noise, 64, 71 - noise])
        write_run(tmp_path, f"half{seed}", "random", seed, [5, 20, 30], fraction=0.5)
    return tmp_path


def test_groups_and_axes(runs):
    groups = study.load_groups(runs)
    assert sorted((d["init"], d["label_fraction"]) for d in map(study.describe, groups)) == [
        ("GAN", 1.0), ("L1-only", 1.0), ("random", 0.5), ("random", 1.0)]
    assert all(g.n == 3 for g in groups)
    assert study.find(groups, init="random", label_fraction=1.0) is not None


def test_paired_difference_and_verdicts(runs):
    groups = study.load_groups(runs)
    gan, random = study.find(groups, init="GAN"), study.find(groups, init="random", label_fraction=1.0)
    first = study.compare(gan, random, "first")
    assert first["difference"] == pytest.approx(40.0) and first["verdict"] == study.SUPPORTS and first["n"] == 3
    last = study.compare(gan, random, "last")
    assert last["difference"] == pytest.approx(1.0) and last["verdict"] == study.SUPPORTS  # the noise cancels in pairs
    assert study.compare(random, gan, "first")["verdict"] == study.CONTRADICTS
    l1 = study.find(groups, init="L1-only")
    assert study.compare(gan, l1, "last")["verdict"] == study.CANNOT_TELL
    assert study.verdict(1.0, float("inf")) == study.CANNOT_TELL  # one seed: no interval


def test_where_runs_end_is_compared_only_when_they_plateaued(runs):
    for seed in range(3):  # the random runs set their best validation score at their last epoch: still learning
        (runs / f"r{seed}" / "summary.json").write_text(json.dumps({"status": "finished", "best_epoch": 3, "epochs": 3}))
    groups = study.load_groups(runs)
    gan, random = study.find(groups, init="GAN"), study.find(groups, init="random", label_fraction=1.0)
    assert study.learning_seeds(gan) == [] and study.learning_seeds(gan, random) == [0, 1, 2]
    last = study.compare(gan, random, "last")
    assert last["verdict"] == study.STILL_LEARNING and last["difference"] == pytest.approx(1.0)
    assert study.compare(gan, random, "first")["verdict"] == study.SUPPORTS  # a fixed early point: compared
    helps = study.claims_evidence(groups)[0]
    assert helps["verdict"] == study.SUPPORTS  # from the first evaluation alone; mean and last are not compared
    assert any("mean" in line and "not compared: still learning (seeds 0, 1, 2)" in line for line in helps["details"])
    stable = study.claims_evidence(groups)[3]
    assert stable["verdict"] == study.STILL_LEARNING
    table = study.baseline_table(groups, {"emps": {"otsu": 65.0, "all_foreground": 40.0}})
    assert table["emps, unet_2_44, random"]["seeds still learning"] == "3 of 3"
    assert table["emps, unet_2_44, GAN"]["seeds still learning"] == "0 of 3"


def test_claims_evidence(runs):
    evidence = {e["claim"][:20]: e for e in study.claims_evidence(study.load_groups(runs))}
    helps = next(e for e in evidence.values() if e["claim"].startswith("Pretraining helps"))
    assert helps["verdict"] == study.SUPPORTS and len(helps["details"]) == 3
    hrnet = next(e for e in evidence.values() if "HRNet" in e["claim"])
    assert hrnet["verdict"] == study.CANNOT_TELL and "no HRNet" in hrnet["details"][0]
    stable = next(e for e in evidence.values() if "stable" in e["claim"])
    assert stable["verdict"] == study.SUPPORTS  # random's validation curve dropped by 10, GAN's never
    ablation = next(e for e in evidence.values() if "L1-only" in e["claim"])
    assert ablation["verdict"] in (study.CANNOT_TELL, "mixed")


def test_detectable_difference_is_the_power_of_the_seeds():
    """(t_0.975 + t_0.80) * sd / sqrt(n): with 5 seeds of spread 1.58, differences under 2.63 points go unseen."""
    assert study.detectable_difference([1, 2, 3, 4, 5]) == pytest.approx((2.7764 + 0.9410) * 1.5811 / 5 ** 0.5, rel=1e-3)
    assert study.detectable_difference([3.0]) == float("inf")
    assert study.detectable_difference([1, 1, 1]) == 0.0
    # more seeds with the same spread detect smaller differences
    assert study.detectable_difference([1, 2, 3, 4, 5] * 2) < study.detectable_difference([1, 2, 3, 4, 5])


def test_groups_are_read_against_otsu_and_the_plateau_is_counted(runs):
    groups = study.load_groups(runs)
    gan, random = study.find(groups, init="GAN"), study.find(groups, init="random", label_fraction=1.0)
    assert study.against_baseline(gan, 60.0) == "beats Otsu"  # last test Dice 71 ± 0.7
    assert study.against_baseline(random, 75.0) == "does not beat Otsu"
    assert study.against_baseline(random, 70.0) == "ties with Otsu"
    for seed in range(3):  # a finished run's summary: its best validation epoch of its epochs
        (runs / f"g{seed}" / "summary.json").write_text(json.dumps({"status": "finished", "best_epoch": 3 if seed else 2,
                                                                      "epochs": 10, "stopped_at_plateau": seed == 0}))
        history = [[5, 60.0], [8, 61.0], [10, 61.0 + (0.3, 2.0, 0.0)[seed]]]  # the best comes at epoch 10 (r2: ties)
        (runs / f"r{seed}" / "summary.json").write_text(json.dumps({"status": "finished", "best_epoch": 10, "epochs": 10,
                                                                      "val_history": history, "dataset": "emps"}))
    assert study.still_learning({"best_epoch": 9, "epochs": 10}) and not study.still_learning({"best_epoch": 8, "epochs": 10})
    count = study.plateau_count(runs)
    assert (count["plateaued"], count["runs"]) == (3, 6) and sorted(count["still_learning"]) == ["r0", "r1", "r2"]
    assert count["late_gains"] == pytest.approx({"r0": 0.3, "r1": 2.0, "r2": 0.0})  # what the last fifth added
    text = study.plateau_text(count)
    assert text.startswith("3 of 6 finished fine-tuning runs (50%)") and "short of the 80%" in text
    assert "median of 0.30 points, and by more than 1 point in 1 of 3 (1 on emps)" in text
    assert count["stopped"] == 1 and "1 of the 6 ended at their own plateau stop" in text
    (runs / "baselines.csv").write_text("dataset,split,baseline,polarity,n_images,dice_percent\n"
                                       "emps,test,otsu,dark,99,54.7\nemps,test,all_foreground,,99,41.6\n")
    assert study.load_baselines(runs) == {"emps": {"otsu": 54.7, "all_foreground": 41.6}}


def test_the_head_ablation_and_hrnet_are_compared(tmp_path):
    for seed, noise in enumerate((0.0, 0.5, -0.5, 0.2, -0.2)):
        write_run(tmp_path, f"g{seed}", "gan", seed, [60 + noise, 80 + noise])
        write_run(tmp_path, f"t{seed}", "gan", seed, [5 + noise, 50 - noise])
        config = json.loads((tmp_path / f"t{seed}" / "config.json").read_text())
        (tmp_path / f"t{seed}" / "config.json").write_text(json.dumps({**config, "head": "transfer"}))
        write_run(tmp_path, f"hg{seed}", "gan", seed, [70, 90 + noise], model="hrnet_w18_small")
        write_run(tmp_path, f"hr{seed}", "random", seed, [40, 85 - noise], model="hrnet_w18_small")
    groups = study.load_groups(tmp_path)
    assert study.find(groups, model="unet_2_44", init="GAN") is not study.find(groups, head="transfer", init="GAN")
    evidence = {e["claim"][:25]: e for e in study.claims_evidence(groups)}
    head = evidence["(ours) Re-initialising th"]
    assert head["verdict"] == study.SUPPORTS and "fresh head - carried head" in head["details"][0]
    hrnet = evidence["Pretrained HRNet beats al"]
    assert hrnet["verdict"] == study.SUPPORTS and len(hrnet["details"]) == 2  # vs random HRNet, vs GAN U-Net
    assert "detectable ≥" in hrnet["details"][0]
    for seed in range(5):  # random HRNet alone: measured, but not the claim
        (tmp_path / f"hg{seed}" / "results.csv").unlink()
    hrnet = next(e for e in study.claims_evidence(study.load_groups(tmp_path)) if "HRNet" in e["claim"])
    assert hrnet["details"] == ["not measured: no GAN-pretrained HRNet run has finished"]


def test_every_setting_is_set_beside_its_datasets_baselines(runs):
    groups = study.load_groups(runs)
    table = study.baseline_table(groups, {"emps": {"otsu": 65.0, "all_foreground": 40.0}})
    assert table["emps, unet_2_44, GAN"]["against Otsu"] == "beats Otsu"  # last test Dice 71 ± 0.9
    assert table["emps, unet_2_44, random, 50% labels"]["against Otsu"] == "does not beat Otsu"  # 30
    mean, _, n = table["emps, unet_2_44, GAN"]["test Dice, last evaluation"]
    assert mean == pytest.approx(71 + 0.1 / 3) and n == 3
    assert table["emps, unet_2_44, GAN"]["all-foreground"] == 40.0
    assert study.baseline_table(groups, {})["emps, unet_2_44, GAN"]["against Otsu"] == "no baseline"


def test_the_planned_settings_are_named_as_the_finished_groups(runs, tmp_path):
    """A setting missing from the finished groups is one the sweep plans and has not finished."""
    from emlib import grid

    spec = {"runs_dir": str(tmp_path / "study"), "seeds": [0, 1, 2],
            "pretrain": {"models": ["unet_2_44"], "subsets": {"Preal": None}, "variants": {"L1": {"adv_weight": 0.0}},
                         "config": {}},
            "segmentation": [{"datasets": ["emps"], "models": {"unet_2_44": ["random", "Preal", "Preal-L1"]},
                              "label_fractions": [0.5, 1.0], "config": {}},
                             {"datasets": ["emps"], "tag": "head-transfer", "seeds": [0], "models": {"unet_2_44": ["Preal"]},
                              "config": {"head": "transfer"}}]}
    planned = study.planned_settings(grid.expand_grid(spec))
    assert planned["emps, unet_2_44, GAN (carried head)"] == [0] and planned["emps, unet_2_44, L1-only"] == [0, 1, 2]
    finished = {study.setting_label(g) for g in study.load_groups(runs)}
    assert finished < set(planned)  # every finished group is named as the sweep names its setting
    assert set(planned) - finished == {"emps, unet_2_44, GAN, 50% labels", "emps, unet_2_44, L1-only, 50% labels",
                                       "emps, unet_2_44, GAN (carried head)"}


def test_cross_dataset_scores_are_pooled_over_seeds(tmp_path):
    lines = ["run_id,trained_on,scored_on,model,init,head,seed,label_fraction,dice_percent,own_test_dice_percent"]
    lines += [f"g{s},emps,msa_segtrack,unet_2_44,pretrained,,{s},1.0,{30 + s},{60 + s}" for s in range(3)]
    lines += [f"t{s},emps,msa_segtrack,unet_2_44,pretrained,transfer,{s},1.0,10,50" for s in range(3)]
    (tmp_path / "cross_dataset.csv").write_text("\n".join(lines) + "\n")
    table = study.cross_dataset_table(tmp_path, {"msa_segtrack": {"otsu": 61.6}})
    row = table["emps -> msa_segtrack, unet_2_44, GAN"]
    assert row["Dice on the other dataset"][0] == pytest.approx(31.0) and row["Dice on the other dataset"][2] == 3
    assert row["Dice on its own dataset"][0] == pytest.approx(61.0) and row["Otsu on the other dataset"] == 61.6
    assert row["against Otsu there"] == "does not beat Otsu"  # 31.0 with a narrow interval, far below 61.6
    assert table["emps -> msa_segtrack, unet_2_44, GAN (carried head)"]["Dice on the other dataset"][:2] == (10.0, 0.0)
    assert study.cross_dataset_table(tmp_path / "none", {}) == {}


def write_pretraining(root, name, adv_weight, final_val_l1, identity_val_l1=0.04, model="unet_2_44"):
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": model, "adv_weight": adv_weight, "image_size": 96,
                                                    "batch_size": 8, "lr": 2e-4}))
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "steps": 400, "final_val_l1": final_val_l1,
                                                     "identity_val_l1": identity_val_l1}))
    (folder / "generator.safetensors").write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps({"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}))
    curve = [0.06, 0.05, 0.04, 0.035, 0.031, 0.032, 0.029, 0.031]
    (folder / "validation.csv").write_text("step,val_l1\n" + "".join(f"{50 * (i + 1)},{v}\n" for i, v in enumerate(curve)))


def test_the_pretraining_design_is_read_from_the_run(tmp_path):
    write_pretraining(tmp_path, "pretrain-unet_2_44-preal", adv_weight=0.0, final_val_l1=0.03)
    row = study.pretraining_design(tmp_path)["unet_2_44-preal"]
    assert (row["objective"], row["steps"], row["crop (px)"], row["patches train / val / test"]) == ("L1-only", 400, 96, "3 / 1 / 1")
    assert row["vs identity"] == "-25%" and row["flattened"]  # the last quarter: within the scatter of the one before


def test_a_pretrained_init_is_set_beside_what_its_generator_had_learnt(runs):
    write_pretraining(runs, "pretrain-unet_2_44-preal", adv_weight=1.0, final_val_l1=0.05)  # 25 % worse than the identity
    write_pretraining(runs, "pretrain-unet_2_44-preal-l1", adv_weight=0.0, final_val_l1=0.03)  # L1-only: not the GAN init
    table = study.pretrained_against_random(runs, study.load_groups(runs))
    assert list(table) == ["emps, unet_2_44"]
    row = table["emps, unet_2_44"]
    assert row["generator's val L1 vs identity"] == "+25%"
    assert row["GAN - random, first (Dice points)"].startswith("+40.0 ± ") and row["GAN - random, first (Dice points)"].endswith("(n = 3)")
    assert row["GAN - random, last (Dice points)"].startswith("+1.0 ± ")
    assert row["seeds still learning"] == "none"


def test_a_curve_has_flattened_only_when_its_last_quarter_gains_nothing_beyond_its_scatter():
    falling = [1.0 - 0.1 * i for i in range(8)]  # steady, noise-free descent: still falling
    noisy_plateau = [1.0, 0.6, 0.5, 0.52, 0.45, 0.55, 0.48, 0.53]  # the last quarter is within the scatter
    noisy_falling = [1.0, 0.9, 0.8, 0.82, 0.6, 0.62, 0.3, 0.32]  # a drop far beyond the scatter
    assert not study.curve_flattened(falling) and study.curve_flattened(noisy_plateau)
    assert not study.curve_flattened(noisy_falling) and not study.curve_flattened([0.5, 0.4, 0.4, 0.4])  # too short


def test_the_final_training_loss_is_the_last_epochs_mean_over_the_seeds(runs):
    for seed, last in enumerate((0.5, 0.6, 0.7)):  # two log rows in the last epoch: their mean counts
        (runs / f"r{seed}" / "log.csv").write_text(
            "epoch,step,train_loss\n1,10,0.9\n3,20,%.2f\n3,30,%.2f\n" % (last - 0.1, last + 0.1))
    group = study.find(study.load_groups(runs), init="random", label_fraction=1.0)
    assert study.final_train_loss(group) == pytest.approx(0.6)


def test_a_settings_precision_is_read_from_what_its_runs_resolved(runs):
    """amp "auto" is bf16 on one processor and fp32 on another: the design table says which each setting ran in."""
    for folder in runs.iterdir():
        (folder / "summary.json").write_text(json.dumps({"epochs": 3}))  # no fast_path: before it was recorded, fp32
    for name, amp in (("r0", "bfloat16"), ("r1", None), ("r2", None), ("g0", "bfloat16"), ("g1", "bfloat16"), ("g2", "bfloat16")):
        (runs / name / "summary.json").write_text(json.dumps({"epochs": 3, "fast_path": {"amp": amp}}))
    groups = study.load_groups(runs)
    design = study.finetuning_design(groups)
    assert design[study.setting_label(study.find(groups, init="random", label_fraction=1.0))]["precision"] == "bf16 autocast 1, fp32 2"
    assert design[study.setting_label(study.find(groups, init="GAN"))]["precision"] == "bf16 autocast"
    assert study.precision_text([]) == "" and study.precision({"fast_path": {"amp": "float16"}}) == "fp16 autocast"


def test_a_summary_number_is_averaged_over_the_groups_finished_runs(runs):
    for name, score in (("r0", 60.0), ("r1", 70.0), ("r2", 71.0)):
        (runs / name / "summary.json").write_text(json.dumps({"best_val_dice_percent": score}))
    (runs / "r2" / "summary.json").unlink()  # r2 not finished: left out
    group = study.find(study.load_groups(runs), init="random", label_fraction=1.0)
    assert study.mean_summary(group, "best_val_dice_percent") == 65.0
