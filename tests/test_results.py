import pytest

from emlib import pooling, results


def test_append_rows_writes_header_once_and_keeps_schema(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    row = {c: "x" for c in results.RESTORATION_COLUMNS}
    results.append_rows(path, [row], results.RESTORATION_COLUMNS)
    results.append_rows(path, [dict(row, l1="0.5")], results.RESTORATION_COLUMNS)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == results.RESTORATION_COLUMNS
    assert len(lines) == 3
    assert [r["l1"] for r in results.read_rows(path)] == ["x", "0.5"]


def test_append_rows_rejects_rows_of_another_schema(tmp_path):
    row = {c: 1 for c in results.SEGMENTATION_COLUMNS}
    del row["dice_percent"]
    row["l1"] = 0.1
    with pytest.raises(ValueError, match="dice_percent.*l1"):
        results.append_rows(tmp_path / "r.csv", [row], results.SEGMENTATION_COLUMNS)
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("name,expected", [("unet_4_424", "U-Net_4_424"), ("unet_2_44", "U-Net_2_44"),
                                           ("hrnet_w18_small", "HRNet"), ("hrnet_w44", "HRNet")])
def test_paper_model_name(name, expected):
    assert results.paper_model_name(name) == expected


def test_schemas_extend_the_papers_tables():
    import csv
    from pathlib import Path
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "paper"
    if not shared.exists():
        pytest.skip("../shared/paper not present")
    for name, columns in [("segmentation_dice.csv", results.SEGMENTATION_COLUMNS),
                          ("temimagenet_l1.csv", results.RESTORATION_COLUMNS)]:
        header = next(csv.reader(open(shared / name)))
        assert columns[: len(header)] == header


# ---------------------------------------------------------------- grouping runs by config

BASE_CONFIG = {"task": "segmentation", "model": "unet_2_44", "init": "random", "dataset": "Au5nmV1", "data_root": None,
               "crop": 96, "batch_size": 4, "epochs": 2, "epoch_size": 24, "lr": 3e-3, "eval_every": 1,
               "label_fraction": 1.0, "augment_dihedral": True, "augment_resize": True, "augment_noise": True, "seed": 0, "split_seed": 0, "device": "cpu", "amp": False,
               "channels_last": False, "compile": False, "workers": 0, "deterministic": True, "output_dir": "x"}


def write_run(folder, dice, finished=True, **overrides):
    """A fine-tuning run folder: config.json, results.csv (epochs 1, 2), summary.json when finished."""
    import json

    config = {**BASE_CONFIG, **overrides, "output_dir": str(folder)}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    rows = [{"table": 6, "dataset": config["dataset"], "model": "U-Net_2_44", "blocks": 2, "receptive_field": 44,
             "init": "random" if config["init"] == "random" else "pretrained", "epoch": epoch,
             "dice_percent": value, "seed": config["seed"], "label_fraction": config["label_fraction"],
             "source": "synthetic", "run_id": folder.name} for epoch, value in ((1, dice - 10), (2, dice))]
    results.append_rows(folder / "results.csv", rows, results.SEGMENTATION_COLUMNS)
    if finished:
        (folder / "summary.json").write_text("{}")


@pytest.fixture
def mixed_runs(tmp_path):
    """The book's bug: label fractions and seeds in one folder, one run duplicated (copied
    elsewhere, run on another device), folder names that say nothing (or mislead)."""
    runs = tmp_path / "runs"
    for fraction, dice in ((0.1, 60.0), (0.25, 70.0), (0.5, 80.0)):
        write_run(runs / "label_efficiency" / f"random-lf{fraction:g}", dice, label_fraction=fraction)
    for seed, dice in ((0, 90.0), (1, 92.0), (2, 97.0)):
        write_run(runs / f"seg-s{seed}", dice, seed=seed)
    write_run(runs / "copy" / "seg-s0", 92.0, seed=1, device="cuda", workers=8)  # seed 1 again; its name says s0
    write_run(runs / "seg-s3", 50.0, seed=3, finished=False)  # interrupted: left out
    return runs


def test_only_runs_identical_but_for_the_seed_are_pooled(mixed_runs):
    groups = pooling.group_runs(pooling.load_runs(mixed_runs))
    by_fraction = {g.experiment["label_fraction"]: g for g in groups}
    assert len(groups) == 4 and sorted(by_fraction) == [0.1, 0.25, 0.5, 1.0]
    full = by_fraction[1.0]
    assert full.seeds == [0, 1, 2] and full.n == 3 and len(full.runs) == 4 and full.duplicates == 1
    mean, ci, n = full.final()
    assert n == 3 and mean == pytest.approx(93.0)  # 92.75 if the duplicate counted twice
    assert ci == pytest.approx(4.3027 * 3.6056 / 3 ** 0.5, rel=1e-4)  # t(0.975, 2) * s / sqrt(3), s = sd(90, 92, 97)
    assert full.curve()[1] == (pytest.approx(83.0), pytest.approx(ci), 3)
    for fraction in (0.1, 0.25, 0.5):
        assert by_fraction[fraction].n == 1 and by_fraction[fraction].final()[1] == 0.0
    assert len(full.rows()) == 6  # one row per seed and epoch
    assert all(g.source == "synthetic" and g.metric == "dice_percent" for g in groups)


def test_a_groups_final_score_takes_each_seed_at_its_own_last_evaluation(tmp_path):
    """Runs that stop at their plateau end at different epochs: seed 1 stops after epoch 1."""
    write_run(tmp_path / "s0", 90.0)
    write_run(tmp_path / "s1", 70.0, seed=1)
    results_csv = tmp_path / "s1" / "results.csv"
    results_csv.write_text("\n".join(results_csv.read_text().splitlines()[:2]) + "\n")  # header and epoch 1 (60.0)
    (group,) = pooling.group_runs(pooling.load_runs(tmp_path))
    mean, _, n = group.final()
    assert n == 2 and mean == pytest.approx(75.0)  # (90 + 60) / 2; the last epoch alone would give 90 (one seed)
    assert [row["epoch"] for row in group.last_rows()] == [2, 1]
    assert "1-2" in pooling.summary_table([group]).splitlines()[1]


def test_every_config_field_but_execution_ones_separates_groups(tmp_path):
    write_run(tmp_path / "a", 80.0)
    write_run(tmp_path / "b", 81.0, seed=1, device="cuda", workers=4, compile=True, channels_last=True,
              deterministic=False, data_root=str(tmp_path))  # execution fields: pooled
    write_run(tmp_path / "c", 82.0, crop=128)
    write_run(tmp_path / "d", 83.0, epochs=3)
    write_run(tmp_path / "e", 84.0, augment_noise=False)
    write_run(tmp_path / "f", 85.0, augment_blur=True)  # a field an older config.json lacks
    write_run(tmp_path / "g", 86.0, dataset="folder", data_root="/data/mine")  # a user's folder: its location names the data
    write_run(tmp_path / "h", 87.0, dataset="folder", data_root="/data/other", seed=1)
    groups = pooling.group_runs(pooling.load_runs(tmp_path))
    assert sorted(g.n for g in groups) == [1, 1, 1, 1, 1, 1, 2]
    assert pooling.varying_fields(groups) == ["augment_blur", "augment_noise", "crop", "data_root", "dataset", "epochs"]
    assert pooling.SEED_FIELD not in pooling.EXECUTION_FIELDS


def test_pretrained_inits_are_told_apart_by_their_pretraining(tmp_path):
    import json

    for name, subset in (("pre-a", 50_000), ("pre-b", 100_000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "generator.safetensors").write_bytes(b"")
        card = {"config": {"generator": "unet_2_44", "subset": subset, "seed": 0, "device": "cuda", "output_dir": name},
                "source": "real"}
        (tmp_path / name / "model_card.json").write_text(json.dumps(card))
    runs = tmp_path / "runs"
    write_run(runs / "1", 80.0, init="pre-a/generator.safetensors")  # relative to a folder above the run
    write_run(runs / "2", 82.0, init=str(tmp_path / "pre-a"), seed=1)  # the same pretraining, another spelling
    write_run(runs / "3", 84.0, init="pre-b")
    write_run(runs / "4", 70.0)
    groups = pooling.group_runs(pooling.load_runs(runs))
    assert sorted(g.n for g in groups) == [1, 1, 2]
    assert "init.pretraining.subset" in pooling.varying_fields(groups)
    assert "init.pretraining.device" not in pooling.varying_fields(groups)  # execution fields of the pretraining too
    pooled = next(g for g in groups if g.n == 2)
    assert pooled.experiment["init"]["pretraining"]["subset"] == 50_000


def test_settings_split_label_fractions_and_summary_names_them(mixed_runs):
    groups = pooling.group_runs(pooling.load_runs(mixed_runs))
    split = pooling.settings(groups)
    assert sorted(split) == [f"label_fraction={f}" for f in ("0.1", "0.25", "0.5", "1.0")]
    assert all(len(members) == 1 for members in split.values())
    table = pooling.summary_table(groups)
    header, *lines = table.splitlines()
    assert header.split()[:3] == ["label_fraction", "runs", "n"]
    assert lines[-1].split()[:6] == ["1.0", "4", "3", "0", "1", "2"]
    assert "93 ± 9" in lines[-1]
    assert pooling.summary_table(groups, markdown=True).startswith("| label_fraction | runs | n |")


def test_results_without_config_are_left_out_with_a_warning(tmp_path):
    write_run(tmp_path / "a", 80.0)
    (tmp_path / "a" / "config.json").unlink()
    with pytest.warns(UserWarning, match="no config.json"):
        assert pooling.load_runs(tmp_path) == []


def test_the_same_folder_reached_twice_is_one_run(mixed_runs):
    assert len(pooling.load_runs([mixed_runs, mixed_runs / "label_efficiency"])) == len(pooling.load_runs(mixed_runs))


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in list(range(1, 41)) + [60, 120]:
        assert pooling.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4), df
    with pytest.raises(ValueError, match="empty"):
        pooling.mean_ci95([])


def test_sweep_summary_pools_by_config_not_by_folder(mixed_runs, capsys):
    from emlib import sweep

    text = sweep.summarize(mixed_runs)
    assert text.startswith("segmentation: 4 configurations, 7 runs")
    assert "93 ± 9" in text and text.count("(one seed)") == 3
    assert "no finished runs" in sweep.summarize(mixed_runs / "nothing-here")


def test_execution_fields_are_fields_of_the_run_configs():
    """A renamed config field would silently stop being ignored (and split groups)."""
    import dataclasses

    from emlib.finetune import FinetuneConfig
    from emlib.pretrain import PretrainConfig

    names = {f.name for cls in (FinetuneConfig, PretrainConfig) for f in dataclasses.fields(cls)}
    assert set(pooling.EXECUTION_FIELDS) <= names
    assert pooling.SEED_FIELD in names and set(pooling.TABLE_AXES) <= names | {"task"}


def test_a_field_added_after_a_run_counts_with_its_default(tmp_path):
    """Seeds of a study continued by newer emlib still pool: a config.json without a field that emlib
    added later groups with runs that wrote the field's default, not apart from them."""
    import json

    write_run(tmp_path / "a", 80.0, seed=0)
    write_run(tmp_path / "b", 81.0, seed=1)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    config.pop("eval_dense_epochs", None)
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    config_b = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**config_b, "eval_dense_epochs": 0}))
    groups = pooling.group_runs(pooling.load_runs(tmp_path))
    assert len(groups) == 1 and groups[0].n == 2
