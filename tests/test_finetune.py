"""Fine-tuning: learning really works on synthetic data, best-model selection,
pretrained initialisation, resume, results files and clear errors."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emlib import cli, models, results
from emlib.data import TEMImageNet, catalog
from emlib.data.augment import CentreCropped
from emlib.finetune import BestModel, FinetuneConfig, build_model, is_evaluation_epoch, registry_model, run
from emlib.inits import tag as init_tag
from emlib.runs import load_finetuned
from emlib.metrics import l1_errors
from emlib.tiling import predict
from emlib.run_folder import read_log


@pytest.fixture(scope="module")
def segmentation_run(data_root, tmp_path_factory):
    """The CPU toy preset on synthetic Au5nmV1 with U-Net_2_44, from random weights."""
    output_dir = tmp_path_factory.mktemp("seg") / "run"
    config = FinetuneConfig.toy(data_root=data_root, output_dir=str(output_dir))
    return config, run(config)


def test_segmentation_learns_on_synthetic_au(segmentation_run):
    config, summary = segmentation_run
    assert summary["status"] == "finished" and summary["source"] == "synthetic"
    assert summary["best_val_dice_percent"] >= 80.0  # from ~15% after the first epoch
    assert summary["test_dice_percent"] >= 70.0


def test_segmentation_results_files(segmentation_run):
    config, summary = segmentation_run
    out = Path(config.output_dir)
    assert (out / "summary.json").is_file() and json.loads((out / "config.json").read_text()) == config.to_dict()
    validation, test = results.read_rows(out / "validation.csv"), results.read_rows(out / "results.csv")
    assert list(validation[0]) == results.SEGMENTATION_COLUMNS and list(test[0]) == results.SEGMENTATION_COLUMNS
    assert [int(r["epoch"]) for r in validation] == list(range(1, config.epochs + 1))  # eval_every=1
    row = test[-1]
    assert (row["table"], row["dataset"], row["model"], row["blocks"], row["receptive_field"], row["init"]) == \
        ("2", "Au5nmV1", "U-Net_2_44", "2", "44", "random")
    assert float(row["dice_percent"]) == pytest.approx(summary["test_dice_percent"], abs=1e-3)


def test_test_rows_follow_the_best_validation_model(segmentation_run):
    """Per evaluation, results.csv holds the test score of the best model so far:
    it changes exactly when the validation score improves."""
    config, summary = segmentation_run
    out = Path(config.output_dir)
    val = [float(r["dice_percent"]) for r in results.read_rows(out / "validation.csv")]
    test = [float(r["dice_percent"]) for r in results.read_rows(out / "results.csv")]
    best_so_far = [max(val[:i + 1]) for i in range(len(val))]
    for i in range(1, len(val)):
        if best_so_far[i] == best_so_far[i - 1]:
            assert test[i] == test[i - 1]
    assert summary["best_epoch"] == 1 + val.index(max(val))


def test_best_model_file_reproduces_the_best_validation_dice(segmentation_run, data_root):
    from emlib.data import AuSegmentation

    config, summary = segmentation_run
    model, loaded_config = load_finetuned(config.output_dir)
    assert loaded_config.model == config.model
    val = AuSegmentation(Path(data_root) / "au", config.dataset, split="val", seed=config.split_seed)
    from emlib.metrics import dice_scores

    dice = [dice_scores(torch.from_numpy(predict(model, image[0], tile=256, overlap=128, standardize=None)), mask[0])
            for image, mask in val]
    assert 100 * torch.cat(dice).mean().item() == pytest.approx(summary["best_val_dice_percent"], abs=0.5)


def test_best_model_keeps_the_first_of_equal_scores():
    best = BestModel(higher_is_better=True)
    model = torch.nn.Conv2d(1, 1, 1)
    updates = [best.update(epoch, score, model) for epoch, score in [(5, 60.0), (10, 80.0), (15, 80.0), (20, 70.0)]]
    assert updates == [True, True, False, False] and (best.epoch, best.score) == (10, 80.0)
    lower = BestModel(higher_is_better=False)
    assert [lower.update(e, s, model) for e, s in [(5, 0.3), (10, 0.1), (15, 0.2)]] == [True, True, False]
    assert lower.epoch == 10


def test_best_model_holds_a_copy_of_the_weights():
    best, model = BestModel(higher_is_better=True), torch.nn.Conv2d(1, 1, 1)
    best.update(5, 1.0, model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(best.state["weight"], model.weight)


def test_evaluation_epochs_every_n_and_the_last():
    config = FinetuneConfig(epochs=12, eval_every=5)
    assert [e for e in range(1, 13) if is_evaluation_epoch(e, config)] == [5, 10, 12]
    assert [e for e in range(1, 61) if is_evaluation_epoch(e, FinetuneConfig())] == list(range(5, 61, 5))
    dense_early = FinetuneConfig(epochs=30, eval_every=10, eval_dense_epochs=4)
    assert [e for e in range(1, 31) if is_evaluation_epoch(e, dense_early)] == [1, 2, 3, 4, 10, 20, 30]


def fake_export(folder, name="unet_2_44", subset=50_000, seed=1):
    """A pretraining export as emlib.pretrain writes it: generator.safetensors + model_card.json."""
    torch.manual_seed(seed)
    generator = models.create(name)
    folder.mkdir(parents=True, exist_ok=True)
    models.save_weights(generator, folder / "generator.safetensors")
    (folder / "model_card.json").write_text(json.dumps({"model": name, "subset": subset}))
    return generator


def test_pretrained_init_loads_and_differs_from_random(tmp_path):
    """Segmentation re-initialises the generator's output head by default (head="reinit"); head="transfer"
    carries it; restoration carries it by default."""
    generator = fake_export(tmp_path / "P50k")
    pretrained, report = build_model(FinetuneConfig.toy(init=str(tmp_path / "P50k")))
    torch.manual_seed(0)
    random_model, none = build_model(FinetuneConfig.toy())
    assert none is None and sorted(report.reinitialised) == ["head.bias", "head.weight"]
    assert len(report.loaded) == len(generator.state_dict()) - 2
    for key, value in generator.state_dict().items():
        assert torch.equal(pretrained.state_dict()[key], value) == (not key.startswith("head."))
    carried, report = build_model(FinetuneConfig.toy(init=str(tmp_path / "P50k"), head="transfer"))
    assert len(report.loaded) == len(generator.state_dict()) and not report.reinitialised
    assert torch.equal(carried.state_dict()["head.weight"], generator.state_dict()["head.weight"])
    assert not torch.equal(carried.state_dict()["head.weight"], random_model.state_dict()["head.weight"])
    with pytest.raises(ValueError, match="head must be one of"):
        FinetuneConfig.toy(head="keep")
    assert init_tag(str(tmp_path / "P50k" / "generator.safetensors")) == "P50k"
    restoration, _ = build_model(FinetuneConfig.toy(task="denoising", init=str(tmp_path / "P50k")))
    assert torch.equal(registry_model(restoration).head.weight, generator.head.weight)
    fake_export(tmp_path / "toy", subset=120)
    assert init_tag(str(tmp_path / "toy")) == "pretrained" and init_tag("random") == "random"


def test_the_model_comes_from_the_init_export_when_none_is_given(data_root, tmp_path, capsys):
    fake_export(tmp_path / "P50k", name="unet_3_96")
    assert FinetuneConfig(init=str(tmp_path / "P50k")).model == "unet_3_96"
    assert FinetuneConfig.toy(init=str(tmp_path / "P50k" / "generator.safetensors")).model == "unet_3_96"
    assert FinetuneConfig.toy(init=str(tmp_path / "P50k"), model="unet_2_44").model == "unet_2_44"  # given: kept
    out = tmp_path / "run"
    assert cli.main(["finetune", "--toy", "--task", "denoising", "--init", str(tmp_path / "P50k"), "--data-root", data_root,
                     "--epochs", "1", "--epoch-size", "4", "--batch-size", "2", "--crop", "32", "--eval-crop", "32",
                     "--no-test", "--output-dir", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == "unet_3_96"
    assert load_finetuned(out)[1].model == "unet_3_96"


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    fake_export(tmp_path / "export", name="unet_2_84")  # same tensor shapes as unet_2_44, other dilations
    with pytest.raises(ValueError, match="unet_2_84"):
        build_model(FinetuneConfig.toy(init=str(tmp_path / "export"), model="unet_2_44"))


@pytest.mark.parametrize("overrides, error, match", [
    (dict(dataset="Au7nm"), ValueError, "dataset"),
    (dict(task="denoising", dataset="Au5nm"), ValueError, "dataset"),
    (dict(task="inpainting"), ValueError, "task"),
    (dict(label_fraction=0.0), ValueError, "label_fraction"),
    (dict(label_fraction=1.5), ValueError, "label_fraction"),
    (dict(model="resnet50"), ValueError, "model"),
    (dict(eval_every=0), ValueError, "eval_every"),
    (dict(downsample=0), ValueError, "downsample must be a whole number"),
    (dict(downsample=2), ValueError, "downsample=2 is for segmentation image folders"),  # the toy's Au5nmV1 tiles
    (dict(task="denoising", downsample=2), ValueError, "downsample=2 is for segmentation image folders"),
])
def test_bad_config_is_named(overrides, error, match):
    with pytest.raises(error, match=match):
        FinetuneConfig.toy(**overrides)


@pytest.mark.parametrize("overrides, match", [
    (dict(init="/nonexistent/generator.safetensors", model="unet_2_44"), "init='/nonexistent/generator.safetensors'"),
    (dict(data_root="/nonexistent/au"), "data_root folder not found: /nonexistent/au"),
])
def test_the_run_checks_the_files_the_config_names(overrides, match, tmp_path):
    config = FinetuneConfig.toy(output_dir=str(tmp_path / "run"), **overrides)  # a config holds values only
    with pytest.raises(FileNotFoundError, match=re.escape(match)):
        run(config)
    assert not (tmp_path / "run").exists()


def test_a_finished_run_folder_copied_elsewhere_loads_without_its_data_and_init(data_root, tmp_path):
    data_copy, export = tmp_path / "data", tmp_path / "P50k"
    shutil.copytree(Path(data_root) / "au", data_copy / "au")
    fake_export(export)
    config = FinetuneConfig.toy(data_root=str(data_copy), init=str(export), output_dir=str(tmp_path / "run"),
                                epochs=1, epoch_size=4, test=False)
    run(config)
    moved = shutil.copytree(tmp_path / "run", tmp_path / "elsewhere" / "run")
    shutil.rmtree(data_copy)
    shutil.rmtree(export)
    model, loaded = load_finetuned(moved)
    assert loaded == dataclasses.replace(config, output_dir=str(moved)) and not Path(loaded.data_root).exists() and not Path(loaded.init).exists()
    weights, _ = models.load_weights(moved / "best_model.safetensors")
    assert all(torch.equal(registry_model(model).state_dict()[k], v) for k, v in weights.items())
    image = torch.rand(1, 1, 32, 32)
    assert model(image).shape == image.shape


def test_config_round_trip_alias_and_unknown_keys():
    config = FinetuneConfig(task="background_removal")
    assert config.task == "noise_background_removal" and config.dataset == "TEMImageNet" and config.batch_size == 64
    assert FinetuneConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="colour"):
        FinetuneConfig.from_dict({**config.to_dict(), "colour": 1})


def test_restoration_beats_the_identity_baseline(data_root, tmp_path):
    config = FinetuneConfig.toy(task="denoising", data_root=data_root, output_dir=str(tmp_path / "dn"), test=False)
    summary = run(config)
    val = CentreCropped(TEMImageNet(Path(data_root) / "temimagenet", "denoising", split="val"), config.eval_crop)
    identity = torch.cat([l1_errors(inputs, target) for inputs, target in val]).mean().item()
    assert summary["best_val_l1"] < 0.8 * identity
    row = results.read_rows(tmp_path / "dn" / "validation.csv")[-1]
    assert list(row) == results.RESTORATION_COLUMNS and (row["table"], row["task"]) == ("7", "denoising")
    assert not (tmp_path / "dn" / "results.csv").exists()  # test=False: no test rows


def test_resume_continues_like_an_uninterrupted_run(data_root, tmp_path):
    """2 epochs, then --resume with epochs=3, equals 3 epochs in one go."""
    tiny = dict(data_root=data_root, crop=64, eval_crop=128, epoch_size=4, batch_size=2, test=False)
    straight = run(FinetuneConfig.toy(epochs=3, output_dir=str(tmp_path / "straight"), **tiny))
    run(FinetuneConfig.toy(epochs=2, output_dir=str(tmp_path / "resumed"), **tiny))
    resumed = run(FinetuneConfig.toy(epochs=3, output_dir=str(tmp_path / "resumed"), **tiny), resume=True)
    assert sum(resumed["val_history"], []) == pytest.approx(sum(straight["val_history"], []), rel=1e-4)
    losses = [read_log(tmp_path / name / "log.csv")["train_loss"] for name in ("straight", "resumed")]
    assert len(losses[1]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert len(results.read_rows(tmp_path / "resumed" / "validation.csv")) == 3
    with pytest.raises(ValueError, match="seed: 0 -> 1"):  # lr may change on resume; the seed may not
        run(FinetuneConfig.toy(epochs=3, seed=1, output_dir=str(tmp_path / "resumed"), **tiny), resume=True)


def test_a_resumed_run_trains_at_the_lr_its_drops_had_reached(data_root, tmp_path):
    """A drop by epoch 2, then --resume: epochs 3-4 train at the dropped lr, as the run in one go did."""
    tiny = dict(data_root=data_root, crop=64, eval_crop=128, epoch_size=4, batch_size=2, test=False, lr=3e-3,
                lr_drops=1, patience=1)
    straight = run(FinetuneConfig.toy(epochs=4, output_dir=str(tmp_path / "straight"), **tiny))
    assert straight["lr_drop_epochs"] and straight["lr_drop_epochs"][0] <= 2
    run(FinetuneConfig.toy(epochs=2, output_dir=str(tmp_path / "resumed"), **tiny))
    resumed = run(FinetuneConfig.toy(epochs=4, output_dir=str(tmp_path / "resumed"), **tiny), resume=True)
    losses = [read_log(tmp_path / name / "log.csv")["train_loss"] for name in ("straight", "resumed")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert resumed["lr_drop_epochs"] == straight["lr_drop_epochs"]


def test_cli_runs_a_tiny_restoration(data_root, tmp_path, capsys):
    from emlib.cli import main

    out = tmp_path / "cli"
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 1, "epoch_size": 2, "eval_crop": 32, "crop": 32}))
    assert main(["finetune", "--toy", "--task", "background_removal", "--config", str(tmp_path / "c.json"),
                 "--data-root", data_root, "--output-dir", str(out), "--batch-size", "2"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["task"], config["model"], config["epochs"], config["batch_size"]) == \
        ("noise_background_removal", "unet_2_44", 1, 2)
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_epoch_size_follows_table_1_for_the_paper_datasets():
    from emlib import paper
    from emlib.finetune import epoch_items

    table1 = {row["dataset"]: row["train"][0] for row in paper.load_splits()}
    assert epoch_items(FinetuneConfig(dataset="Au10nm"), 82) == table1["Au10nm"] == 660
    assert epoch_items(FinetuneConfig(dataset="emps"), 293) == 293  # not a paper dataset: one pass
    assert epoch_items(FinetuneConfig(dataset="Au10nm", epoch_size=None), 82) == 82
    assert epoch_items(FinetuneConfig(dataset="Au10nm", epoch_size="40"), 82) == 40  # as papermill / the CLI pass it
    with pytest.raises(ValueError, match="epoch_size"):
        FinetuneConfig(epoch_size="many")


def test_whole_image_evaluation_of_varied_sizes_matches_one_pass():
    from emlib.finetune import same_size_batches

    model = models.create("unet_3_96", 1, 1).eval()
    items = [(torch.randn(1, 40, 52), torch.zeros(1, 40, 52)), (torch.randn(1, 40, 52), torch.zeros(1, 40, 52)),
             (torch.randn(1, 33, 61), torch.zeros(1, 33, 61))]
    batches = list(same_size_batches(items, batch_size=8))
    assert [tuple(b[0].shape) for b in batches] == [(2, 1, 40, 52), (1, 1, 33, 61)]
    with torch.no_grad():
        out = model(batches[1][0])  # what evaluate runs: the model pads to its multiple and crops back
        assert out.shape == (1, 1, 33, 61)
        padded = torch.nn.functional.pad(batches[1][0], (0, 3, 0, 7), mode="reflect")
        assert torch.equal(out, model(padded)[..., :33, :61])


REAL_NANO = Path(__file__).resolve().parents[1].parent / "shared/data/real/nanoparticles"


@pytest.mark.skipif(not REAL_NANO.is_dir(), reason="real nanoparticle sets not found")
def test_cli_fine_tunes_on_real_msa_segtrack(tmp_path, capsys):
    from emlib.cli import main

    out = tmp_path / "msa"
    main(["finetune", "--toy", "--dataset", "msa_segtrack", "--data-root", str(REAL_NANO), "--crop", "64",
          "--epochs", "1", "--epoch-size", "4", "--eval-crop", "128", "--output-dir", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "real" and summary["dataset"] == "msa_segtrack" and summary["train_images"] == 16
    rows = results.read_rows(out / "results.csv")
    assert rows[0]["dataset"] == "msa_segtrack" and rows[0]["table"] == "" and rows[0]["source"] == "real"


@pytest.mark.skipif(not REAL_NANO.is_dir(), reason="real nanoparticle sets not found")
def test_a_transferred_head_copies_its_input_and_a_fresh_one_does_not():
    """Why segmentation re-initialises the generator's head. Before any fine-tuning, a model carrying the
    head of a generator pretrained on real EM returns (nearly) its input whatever the seed, so it calls
    bright pixels particle: on dark particles (msa_segtrack) it starts at the wrong polarity. The
    penultimate features still encode intensity, so a fresh head's output is correlated with the input
    too, but with a sign drawn by its seed: BCE then fixes one linear layer instead of unlearning a map."""
    from emlib import inits

    names = [name for name in inits.PRETRAINED if "unet_2_44" in name and "l1" not in name]
    generator = inits.path_of(names[0])
    image, _ = catalog.segmentation_dataset("msa_segtrack", REAL_NANO / "msa_segtrack", "test", 0)[0]
    correlation = {"transfer": [], "reinit": []}
    for head in correlation:
        for seed in range(6):
            torch.manual_seed(seed)
            model, _ = build_model(FinetuneConfig.toy(init=str(generator), head=head))
            with torch.no_grad():
                output = model.eval()(image[None])[0, 0]
            correlation[head].append(torch.corrcoef(torch.stack([output.flatten(), image[0].flatten()]))[0, 1].item())
    assert min(correlation["transfer"]) > 0.9, correlation  # a copy of the input, seed after seed
    assert min(correlation["reinit"]) < 0 < max(correlation["reinit"]), correlation  # polarity by chance


def test_augmented_batch_is_what_an_epoch_draws_and_is_seeded(data_root):
    from emlib.finetune import augmented_batch, build_datasets, resolve_data_root
    from emlib.training import SeededSamples

    config = FinetuneConfig.toy(data_root=data_root, test=False)
    train = build_datasets(config, resolve_data_root(config)[0])["train"]
    batch = augmented_batch(train, seed=3, size=5, epoch=1)
    drawn = SeededSamples(train, 3)  # how finetune.run draws its train items
    drawn.epoch = 1
    assert len(batch) == 5 and all(torch.equal(a, b) for i, pair in enumerate(batch) for a, b in zip(pair, drawn[i % len(train)]))
    assert batch[0][0].shape[-1] == config.crop and set(batch[0][1].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(augmented_batch(train, seed=4, size=1)[0][0], augmented_batch(train, seed=3, size=1)[0][0])


def test_a_finished_run_draws_qc_images_of_test_predictions(segmentation_run):
    config, _ = segmentation_run
    pngs = sorted((Path(config.output_dir) / "qc").glob("test_*.png"))
    from emlib import finetune
    n_test = len(finetune.build_datasets(config, finetune.resolve_data_root(config)[0])["test"])
    assert [p.name for p in pngs] == [f"test_{i}.png" for i in range(min(finetune.QC_IMAGES, n_test))]
    from PIL import Image
    panel = np.asarray(Image.open(pngs[0]).convert("RGB"))
    red = (panel[..., 0] > panel[..., 1] + 60).sum()
    assert red > 0  # the masks drawn in red


def test_the_lr_drops_and_the_run_stops_by_its_validation_history(data_root, tmp_path):
    from emlib.finetune import lr_drop_epochs, plateaued, scheduled_lr
    config = FinetuneConfig.toy(lr=1e-3, lr_drops=2, patience=2, plateau_stop=0.5, min_epochs=3, epochs=20)
    history = [(1, 50.0), (2, 60.0), (3, 59.0), (4, 58.0), (5, 61.0), (6, 60.0), (7, 61.0), (8, 60.0), (9, 60.5),
               (10, 60.0), (11, 60.0), (12, 60.0)]
    # best 60 at 2, old by 2 epochs at 4: drop; best 61 at 5 (61 at 7 is no better), old by 2 at 7: drop
    assert lr_drop_epochs(history, config) == [4, 7]
    assert scheduled_lr(history[:3], config) == 1e-3 and scheduled_lr(history[:4], config) == pytest.approx(1e-4)
    assert scheduled_lr(history, config) == pytest.approx(1e-5)
    # after both drops: stop once the best (epoch 5) is at or before half the epochs run
    assert [e for e in range(1, 13) if plateaued(e, history[:e], config)] == [10, 11, 12]
    assert not plateaued(10, history[:10], FinetuneConfig.toy(lr_drops=4, patience=2, plateau_stop=0.5))  # 3 drops by 10
    assert not plateaued(12, history, FinetuneConfig.toy())  # off by default
    assert not plateaued(8, history[:8], dataclasses.replace(config, lr_drops=1))  # one drop at 4, best 5 > 4
    assert not plateaued(10, history[:10], dataclasses.replace(config, patience=4))  # no drop yet by 10
    assert lr_drop_epochs(history, dataclasses.replace(config, min_epochs=6)) == [7, 9]  # none before min_epochs
    frozen = dict(lr=1e-12, plateau_stop=0.5, patience=2, min_epochs=3, epochs=8, eval_every=1, data_root=str(data_root),
                  output_dir=str(tmp_path / "run"))
    summary = run(FinetuneConfig.toy(**frozen))  # nothing is learnt: the best is epoch 1's, the run ends at 3
    assert summary["best_epoch"] == 1 and summary["epochs"] == 3 and summary["stopped_at_plateau"]
    assert [row["epoch"] for row in results.read_rows(tmp_path / "run" / "validation.csv")] == ["1", "2", "3"]
    with pytest.raises(ValueError, match="plateau_stop must be a fraction"):
        FinetuneConfig.toy(plateau_stop=1.0)
    with pytest.raises(ValueError, match="patience must be >= 1"):
        FinetuneConfig.toy(patience=0)
