"""BioImage.IO export: a finished run folder -> a model package for deepImageJ, ilastik, napari.

    python -m emlib export bioimageio RUN_DIR --out FILE.zip
    emlib.bioimageio.export(run_dir, "model.zip")

One call per run folder: a fine-tuning run (segmentation or restoration,
`best_model.safetensors`) or a pretraining run (`generator.safetensors` +
`model_card.json`: a restoration model, corrupted EM in, restored EM out). The
package is a BioImage.IO model description (format 0.5) with:

- the weights twice. `pytorch_state_dict`, whose architecture is a source file
  in the package (`emlib_network.py`, the Model Zoo's usual form): emlib's own
  network modules (emlib/models/unet.py, and hrnet.py for HRNet, which declares
  timm as a dependency) copied verbatim with a `create(name, ...)` builder, so
  the package runs where emlib is not installed and cannot drift from the weights.
  And TorchScript (traced): deepImageJ runs it.
- the processing emlib applies, declared, so that a consumer applying it gets
  emlib's outputs:
    segmentation: zero_mean_unit_variance per image (Au images are standardised
      per image) -> network -> sigmoid -> binarize 0.5 (= logit > 0, the mask
      that emlib's Dice scores);
    restoration: intensities of any bit depth scaled per image between their
      0.1 and 99.9 percentiles and clipped to [0, 1] (emlib.data.images'
      rule for non-8-bit images) -> x 2 - 1 (the [-1, 1] of pix2pix:
      emlib.intensity) -> network -> (y + 1) / 2, on the [0, 1] scale.
- axes (batch, channel, y, x); y and x with min = step = the network's size
  multiple (2**B for U-Net_B, 32 for HRNet) and an output halo, so a consumer
  can predict large images tile by tile.
- a test input from the run's test split and the expected output computed by
  emlib's own code (not by bioimageio.core), so that bioimageio.core's model
  test checks the declared processing against emlib; the same pair as TIFF
  sample tensors; a cover (input | prediction); a README made from the run's
  config and summary. Files extract with mode 0644.
"""
import inspect
import json
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

from emlib import __version__, finetune, pretrain, runs
from emlib.data import Corruption
from emlib.data.images import PERCENTILES, to_unit_range
from emlib.models import hrnet as hrnet_source, unet as unet_source
from emlib.data.registry import DATASETS
from emlib.finite import check_finite_weights
from emlib.intensity import FROM_CENTERED, TO_CENTERED
from emlib.results import paper_model_name
from emlib import tiling
from emlib.tiling import standardize_image

EIGHT_BIT = 255.0
LICENSE = "MIT"  # emlib's licence, for the weights it trained; the data keep their own terms (README)
SCALE_LABELS = {"synthetic": "toy run on synthetic data, not for use", "real": "small CPU run on real data"}
PAPER = ("Kazimi B, Ruzaeva K, Sandfeld S (2024). Self-Supervised Learning in Electron Microscopy: Towards a "
         "Foundation Model for Advanced Image Analysis. arXiv:2402.18286", "10.48550/arXiv.2402.18286")


# ----------------------------------------------------------------------------- reading a run folder


def read_run(run_dir) -> runs.Run:
    """A finished fine-tuning or pretraining run folder (`emlib.runs.read`) with what a package needs:
    its data source, its weights and finite values; one clear error naming the folder and what is wrong."""
    run = runs.read(run_dir)
    if run.summary.get("source") not in SCALE_LABELS:
        raise ValueError(f"{run.folder}/summary.json has no data source ('source': one of {list(SCALE_LABELS)}): "
                         "a run from an older emlib format")
    if run.kind == "pretrain" and not (run.folder / "model_card.json").is_file():
        raise FileNotFoundError(f"{run.folder}: model_card.json is missing (a pretraining run from an older emlib format?)")
    run.config  # noqa: B018 (config.json must fit this emlib: ValueError naming the folder)
    check_finite(run.network, run.folder)
    return run


def segmentation(run: runs.Run) -> bool:
    return run.task == finetune.SEGMENTATION


def centered(run: runs.Run) -> bool:
    """The network works on [-1, 1] intensities (restoration fine-tuning; pretraining unless centered=False)."""
    return run.config.centered if run.kind == "pretrain" else not segmentation(run)


def scale_label(run: runs.Run) -> str:
    """How far to trust the model, read from the run: a toy (synthetic data) or a small run on real data."""
    gpu = run.summary.get("machine", {}).get("gpu")  # runs record their hardware (emlib.provenance)
    if run.summary["source"] == "real" and gpu:
        return f"run on real data on a GPU ({gpu}); see Data and Training for its size"
    return SCALE_LABELS[run.summary["source"]]


def check_finite(network: torch.nn.Module, folder: Path) -> None:
    """NonFiniteWeightsError naming the folder when a weight tensor holds NaN or inf (a diverged run)."""
    check_finite_weights(network.state_dict(), f"{folder}: the run diverged, there is no model to export")


# ----------------------------------------------------------------------------- the test image and emlib's output


def held_out_inputs(run: runs.Run) -> tuple:
    """(iterator over the input images (1, H, W) of the run's test split, as emlib's datasets give
    them, the split's name). A pretraining run's test images (its own split, `Run.images`) come
    corrupted as in pretraining."""
    if run.kind == "finetune":
        folder, _ = finetune.resolve_data_root(run.config)
        datasets = finetune.build_datasets(run.config, folder)
        split = "test" if "test" in datasets else "val"  # a run made with test=False has no test split
        return (datasets[split][i][0] for i in range(len(datasets[split]))), split

    config = run.config
    clean = run.images("test")
    # Always corrupted (noise and blur from the run's ranges), so that the example shows a restoration.
    corruption = Corruption(noise_std=config.noise_std, blur_sigma=config.blur_sigma, p_noise=1.0, p_blur=1.0,
                            flip=False, rot90=False)
    generator = torch.Generator().manual_seed(config.split_seed)
    return (corruption(clean[i][None], generator)[0][0] for i in range(len(clean))), "test"


def example_pair(run: runs.Run) -> tuple:
    """(package input (1, 1, H, W), emlib's output for it, "image <i> of the <split> split"): the first
    image whose output is not all zero (the format cannot check an all-zero output, e.g. an empty mask)."""
    images, split = held_out_inputs(run)
    for index, image in enumerate(images):
        raw = package_input(run, crop_to_multiple(image, getattr(run.network, "size_multiple", 1)))[None].float()
        expected = emlib_output(run, raw)
        if expected.float().abs().max() >= 1e-4:
            return raw, expected, f"image {index} of the {split} split"
    raise ValueError(f"{run.folder}: the model's output is 0 on every {split} image (no particle found): there is "
                     "no test output that the package's check could use")


def crop_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """The centre crop of (C, H, W) whose sides are multiples of `multiple` (valid package input sizes)."""
    height, width = image.shape[-2:]
    new_h, new_w = height - height % multiple, width - width % multiple
    if new_h == 0 or new_w == 0:
        raise ValueError(f"test image {height} x {width} is smaller than the network's size multiple {multiple}")
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return image[..., top:top + new_h, left:left + new_w]


def package_input(run: runs.Run, image: torch.Tensor) -> torch.Tensor:
    """What a consumer feeds the package, on the 0..255 scale of an 8-bit image (the package takes
    any scale). Restoration: the [0, 1] image x 255. Segmentation: emlib's datasets give the image
    standardised, so it is min-max scaled to 0..255; the package standardises it again, and the
    test checks that step too."""
    if segmentation(run):
        return (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8) * EIGHT_BIT
    return image * EIGHT_BIT


@torch.no_grad()
def emlib_output(run: runs.Run, raw: torch.Tensor) -> torch.Tensor:
    """emlib's own output for a package input batch (B, 1, H, W): the mask (uint8, logit > 0) or the restored image."""
    if segmentation(run):
        standardised = torch.stack([standardize_image(x, "per_image") for x in raw])
        return (run.network(standardised) > 0).to(torch.uint8)
    images = torch.stack([torch.from_numpy(to_unit_range(x[0].numpy()))[None] for x in raw])  # percentiles, clipped
    if run.kind == "finetune":
        return finetune.for_task(run.network, run.task)(images)
    return pretrain.restore_images(run.network, images, centered(run))


# ----------------------------------------------------------------------------- the files of the package


ARCHITECTURE_FILE = "emlib_network.py"
ENVIRONMENT_FILE = "environment.yaml"


def architecture_source(run: runs.Run) -> str:
    """The network's source as one file without emlib: emlib's U-Net module (and HRNet's, which
    imports timm), verbatim, and `create(name, in_channels, out_channels)`, the registry's rule."""
    parts = [inspect.getsource(unet_source)]
    if run.config.model in hrnet_source.WIDTHS:
        parts.append(inspect.getsource(hrnet_source).replace("from .unet import pad_to_multiple\n", ""))
    parts.append(f'''

def create(name, in_channels=1, out_channels=1):
    """The network `name` of emlib {__version__}'s registry (emlib.models.create), with random weights."""
    if name in DILATIONS:
        return UNet(DILATIONS[name], in_channels=in_channels, out_channels=out_channels)
    return HRNet(name, in_channels=in_channels, out_channels=out_channels)
''')
    return f"# {run.config.model}: the network of this package, from emlib {__version__} (MIT licence).\n" + "\n".join(parts)


def save_weights(run: runs.Run, example: torch.Tensor, folder: Path) -> tuple:
    """(state dict .pt, TorchScript .pt) in `folder`; the traced model is checked against the eager one."""
    state_path, script_path = folder / "weights.pt", folder / "weights_torchscript.pt"
    torch.save(run.network.state_dict(), state_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: shape checks become constants (inputs are multiples)
        traced = torch.jit.trace(run.network, example, check_trace=False)
    with torch.no_grad():
        error = (traced(example) - run.network(example)).abs().max().item()
    if not error <= 1e-4:
        raise RuntimeError(f"TorchScript of {run.config.model} differs from the model by {error:.3g} on the test input")
    traced.save(str(script_path))
    return state_path, script_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Min-max scaled to 0..255 for display."""
    low, high = float(image.min()), float(image.max())
    return ((image - low) / max(high - low, 1e-8) * 255).round().astype(np.uint8)


def save_cover(raw: np.ndarray, output: np.ndarray, run: runs.Run, path: Path, height: int = 256) -> Path:
    """input | prediction side by side (2:1), `height` pixels high."""
    shown = output * 255 if segmentation(run) else np.clip(output, 0, 1) * 255
    halves = [to_uint8(raw), shown.round().astype(np.uint8)]
    width = round(height * raw.shape[1] / raw.shape[0])
    images = [Image.fromarray(h).resize((width, height), Image.NEAREST if i else Image.BILINEAR)
              for i, h in enumerate(halves)]
    cover = Image.new("L", (2 * width, height))
    cover.paste(images[0], (0, 0))
    cover.paste(images[1], (width, 0))
    cover.save(path)
    return path


# ----------------------------------------------------------------------------- the description


def processing(run: runs.Run) -> tuple:
    """(preprocessing, postprocessing) as BioImage.IO steps, exactly what emlib applies."""
    from bioimageio.spec.model import v0_5 as spec

    def scale(gain, offset=0.0):
        return spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=gain, offset=offset))

    if segmentation(run):
        pre = [spec.ZeroMeanUnitVarianceDescr(kwargs=spec.ZeroMeanUnitVarianceKwargs(axes=[spec.AxisId("y"),
                                                                                           spec.AxisId("x")]))]
        post = [spec.SigmoidDescr(), spec.BinarizeDescr(kwargs=spec.BinarizeKwargs(threshold=0.5)),
                spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="uint8"))]
        return pre, post
    range_kwargs = spec.ScaleRangeKwargs(axes=[spec.AxisId("y"), spec.AxisId("x")], min_percentile=PERCENTILES[0],
                                         max_percentile=PERCENTILES[1])
    pre = [spec.ScaleRangeDescr(kwargs=range_kwargs), spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0))]
    post = []
    if centered(run):
        pre.append(scale(*TO_CENTERED))
        post.append(scale(*FROM_CENTERED))
    return pre, post


def output_halo(network, side: int) -> int:
    """Output pixels a consumer drops at each inner tile edge: the network's reach (`emlib.tiling.reach`),
    rounded up to its size multiple, so that tiled prediction in a consumer equals one whole-image pass.

    The format asks for tiles larger than 2 x halo and the package's test image must be one; where the
    reach is larger than that allows (HRNet's is 300-1500 px), the halo is capped to fit the test image of
    `side` px and tiling in a consumer is approximate near tile edges (the README says so).
    """
    multiple = getattr(network, "size_multiple", 1)
    exact = -(-(tiling.reach(network) or 0) // multiple) * multiple
    fits = max(0, (side - 1) // 2 // multiple * multiple)
    return max(1, min(exact, fits))  # the format wants a halo of at least 1 px


def min_size(multiple: int, halo: int) -> int:
    """The smallest valid tile side: the first multiple of the network's size multiple above 2 * halo."""
    return multiple * (2 * halo // multiple + 1)


def tensors(run: runs.Run, input_path: Path, output_path: Path, halo: int, samples=(None, None)) -> tuple:
    """(input, output) tensor descriptions: axes, sizes, data, processing, test tensors."""
    from bioimageio.spec.model import v0_5 as spec

    multiple = getattr(run.network, "size_multiple", 1)
    size = spec.ParameterizedSize(min=min_size(multiple, halo), step=multiple)
    pre, post = processing(run)
    if segmentation(run):
        in_data = spec.IntervalOrRatioDataDescr(type="float32")
        in_text = "TEM image, one channel, any intensity scale; standardised per image by the package"
        out_data = spec.NominalOrOrdinalDataDescr(values=[0, 1], type="uint8")
        out_text, channel = "nanoparticle mask: 1 = particle (sigmoid > 0.5)", "mask"
    else:
        in_data = spec.IntervalOrRatioDataDescr(type="float32")
        in_text = ("EM image, one channel, of any bit depth (8-bit, 16-bit, float): the package scales it between its "
                   f"{PERCENTILES[0]} and {PERCENTILES[1]} percentiles")
        out_data = spec.IntervalOrRatioDataDescr(type="float32")
        out_text, channel = "restored image on the [0, 1] scale (not clipped)", "restored"
    input_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("intensity")]),
                  spec.SpaceInputAxis(id=spec.AxisId("y"), size=size), spec.SpaceInputAxis(id=spec.AxisId("x"), size=size)]
    output_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier(channel)])] + [
        spec.SpaceOutputAxisWithHalo(id=spec.AxisId(a), halo=halo,
                                     size=spec.SizeReference(tensor_id=spec.TensorId("input"), axis_id=spec.AxisId(a)))
        for a in ("y", "x")]
    inputs = spec.InputTensorDescr(id=spec.TensorId("input"), description=in_text, axes=input_axes, data=in_data,
                                   test_tensor=spec.FileDescr(source=input_path), preprocessing=pre,
                                   sample_tensor=samples[0] and spec.FileDescr(source=samples[0]))
    outputs = spec.OutputTensorDescr(id=spec.TensorId("output"), description=out_text, axes=output_axes,
                                     data=out_data, test_tensor=spec.FileDescr(source=output_path), postprocessing=post,
                                     sample_tensor=samples[1] and spec.FileDescr(source=samples[1]))
    return inputs, outputs


def environment(run: runs.Run) -> str | None:
    """The conda environment of the state-dict weights beyond PyTorch: timm for HRNet, else None."""
    if run.config.model not in hrnet_source.WIDTHS:
        return None
    import timm

    return (f"name: {run.config.model}\nchannels: [conda-forge]\ndependencies:\n  - python>=3.10\n  - pytorch\n  - pip\n"
            f"  - pip:\n      - timm>={timm.__version__}\n")


def weights_description(run: runs.Run, state_path: Path, script_path: Path, source_path: Path, environment_path=None):
    from bioimageio.spec.model import v0_5 as spec

    version = spec.Version(torch.__version__.split("+")[0])
    architecture = spec.ArchitectureFromFileDescr(
        source=source_path, callable=spec.Identifier("create"),
        kwargs={"name": run.config.model, "in_channels": 1, "out_channels": 1})
    dependencies = spec.FileDescr(source=environment_path) if environment_path else None
    return spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(source=state_path, architecture=architecture,
                                                             pytorch_version=version, dependencies=dependencies),
        torchscript=spec.TorchscriptWeightsDescr(source=script_path, pytorch_version=version,
                                                 parent="pytorch_state_dict"))


def data_citations(run: runs.Run) -> list:
    """(text, doi) of the real data the run used, when emlib knows them: the fine-tuning dataset by
    name; pretraining data only when its folder is CEM500K's (real substitutes are other sources)."""
    cites = []
    if run.kind == "finetune" and run.summary["source"] == "real":
        cites += DATASETS[run.config.dataset].citations if run.config.dataset in DATASETS else []
    card = run.card or {}
    if card.get("source") == "real" and "cem500k" in str(card.get("data_root", "")).lower():
        cites += DATASETS["CEM500K"].citations
    return cites


def citations(run: runs.Run) -> list:
    """(text, doi) of the paper and of the data."""
    return list(dict.fromkeys([PAPER] + data_citations(run)))


def model_title(run: runs.Run) -> str:
    """The package's name (letters, digits, `_+- ()` only)."""
    what = "pretrained generator (restoration)" if run.kind == "pretrain" else f"{run.config.dataset} {run.task}"
    toy = " (toy)" if run.summary["source"] == "synthetic" else ""
    return re.sub(r"[^A-Za-z0-9_+\- ()]", "-", f"emlib {paper_model_name(run.config.model)} {what}{toy}")[:128]


def describe(run: runs.Run, files: dict, authors: list, halo: int):
    """The BioImage.IO ModelDescr of a run; `files` maps input, output, cover, readme, weights, torchscript to paths."""
    from bioimageio.spec.model import v0_5 as spec

    inputs, outputs = tensors(run, files["input"], files["output"], halo, (files["sample_input"], files["sample_output"]))
    kind = "segmentation" if segmentation(run) else "restoration"
    training = spec.TrainingDetails(**training_details(run))
    bioimageio = spec.BioimageioConfig(
        training=training, model_parameter_count=sum(p.numel() for p in run.network.parameters()),
        architecture_type=run.config.model, task=kind, modality="electron microscopy")
    return spec.ModelDescr(
        name=model_title(run),
        description=f"{model_title(run)}: {scale_label(run)}. emlib reproduction of arXiv 2402.18286.",
        authors=[spec.Author(name=name) for name in authors],
        cite=[spec.CiteEntry(text=text, doi=spec.Doi(doi)) for text, doi in citations(run)],
        license=spec.LicenseId(LICENSE),
        documentation=spec.FileDescr(source=files["readme"]), covers=[spec.FileDescr(source=files["cover"])],
        tags=["emlib", "electron-microscopy", "pytorch", "2d", kind, run.config.model.split("_")[0],
              "toy" if run.summary["source"] == "synthetic" else "real-data"],
        inputs=[inputs], outputs=[outputs],
        weights=weights_description(run, files["weights"], files["torchscript"], files["architecture"],
                                    files.get("environment")),
        config=spec.Config(bioimageio=bioimageio, emlib=provenance(run)),
    )


def training_details(run: runs.Run) -> dict:
    c = run.config
    if run.kind == "pretrain":
        return dict(training_epochs=run.summary.get("epochs"), training_batch_size=c.batch_size,
                    initial_learning_rate=c.lr, optimizer="Adam",
                    loss_function=f"LSGAN (adversarial weight {c.adv_weight}) + {c.l1_weight} x L1")
    loss = "binary cross-entropy with logits" if segmentation(run) else "L1 + L2"
    return dict(training_epochs=run.summary.get("epochs"), training_batch_size=c.batch_size,
                initial_learning_rate=c.lr, optimizer=c.optimizer, loss_function=loss)


def provenance(run: runs.Run) -> dict:
    """Machine-readable origin of the package: emlib version, run config and summary, scale label."""
    summary = {k: v for k, v in run.summary.items() if k not in ("val_history", "val_l1")}
    return {"emlib_version": __version__, "scale": scale_label(run), "run_kind": run.kind,
            "run_config": run.config.to_dict(), "run_summary": summary,
            "init": run.init, "init_model_card": strip_card(run.card) if run.kind == "finetune" else None}


def strip_card(card: dict | None) -> dict | None:
    return None if card is None else {k: v for k, v in card.items() if k not in ("config", "val_l1")}


# ----------------------------------------------------------------------------- the README


def _score_lines(run: runs.Run) -> list:
    s = run.summary
    if run.kind == "pretrain":
        baseline = f" (the identity, output = input: {s['identity_val_l1']:.4f})" if "identity_val_l1" in s else ""
        return [f"- validation L1 (corrupted -> clean validation images, [0, 1] scale) after the last step: "
                f"{s['final_val_l1']:.4f}{baseline}"]
    if segmentation(run):
        return [f"- best validation Dice: {s['best_val_dice_percent']:.2f} % (epoch {s['best_epoch']})",
                f"- test Dice of that model: {s['test_dice_percent']:.2f} %" if "test_dice_percent" in s else
                "- no test score (the run was made with test=False)"]
    lines = [f"- best validation L1: {s['best_val_l1']:.4f} (epoch {s['best_epoch']})"]
    if "test_l1" in s:
        lines.append(f"- test L1 / PSNR / SSIM of that model: {s['test_l1']:.4f} / {s['test_psnr']:.2f} dB / "
                     f"{s['test_ssim']:.4f}")
    return lines


def _data_lines(run: runs.Run) -> list:
    s, c = run.summary, run.config
    where = f"`{s.get('data_root', c.data_root)}` ({s['source']} data)"
    if run.kind == "pretrain":
        return [f"Pretext task on the EM images from {where}: {s['subset']} training images of "
                f"{c.image_size} px, corrupted on the fly (Gaussian noise std in {list(c.noise_std)}, blur sigma in "
                f"{list(c.blur_sigma)}, flips and 90-degree rotations); the generator learns to return the clean image."]
    task = "nanoparticle segmentation" if segmentation(run) else run.task.replace("_", " ")
    size = "" if c.downsample == 1 else (f" Images and masks were read at 1/{c.downsample} of their size per side "
                                         f"(area averages), scores too: give the model images at that scale.")
    return [f"{task.capitalize()} on {run.config.dataset} from {where}: {s['train_images']} training images (label fraction "
            f"{c.label_fraction}), crops of {c.crop} px; seeded train/validation/test split (split seed {c.split_seed})."
            + size]


def _training_lines(run: runs.Run) -> list:
    s, c = run.summary, run.config
    if run.kind == "pretrain":
        return [f"Pix2Pix with a least-squares GAN loss (adversarial weight {c.adv_weight}) + {c.l1_weight} x L1, "
                f"Adam lr {c.lr}, batch {c.batch_size}, {s['steps']} steps ({s['images_seen']} images seen), "
                f"seed {c.seed}."]
    if run.init == "random":
        init = "random initialisation"
    elif run.card is None:
        init = f"a pretrained generator from `{run.init}` (its model_card.json is no longer there)"
    else:
        card = run.card
        init = (f"the pretrained generator `{run.init}` ({card.get('model')}, Pix2Pix pretraining for "
                f"{card.get('steps')} steps on {card.get('subset')} {card.get('source')} EM images from "
                f"`{card.get('data_root')}`)")
    return [f"Fine-tuned from {init} (`{s['init']}`), {c.optimizer} lr {c.lr}, batch {c.batch_size}, "
            f"{s['epochs']} epochs ({s['steps']} steps), seed {c.seed}; the model kept is the best on the validation "
            f"split (evaluated every {c.eval_every} epochs)."]


def readme(run: runs.Run, example: str, title: str, halo: int) -> str:
    """The package's README.md, from the run's config, summary and (pretraining) model card."""
    multiple = getattr(run.network, "size_multiple", 1)
    if segmentation(run):
        io = ("Input: one-channel TEM image; the package standardises it per image (mean 0, std 1, as emlib's "
              "segmentation loaders do). Output: mask, 1 = particle (sigmoid of the logits > 0.5).")
    else:
        io = ("Input: a one-channel (grayscale) EM image of any bit depth, 8-bit, 16-bit or float, as your microscope "
              f"saved it; the package scales each image between its {PERCENTILES[0]} and {PERCENTILES[1]} percentiles "
              "to [0, 1] and clips (emlib reads non-8-bit images so; 8-bit images emlib divides by 255, which agrees "
              "for an image that spans the 8-bit range)" +
              (" and maps [0, 1] to [-1, 1], the range the network was trained in" if centered(run) else "") +
              ". Output: the restored image on the [0, 1] scale.")
    cites = "\n".join(f"- {text}. doi:{doi}" for text, doi in citations(run))
    missing = []
    if run.summary["source"] == "real" and not data_citations(run):
        missing = [f"- The data: cite the sources of `{run.summary.get('data_root')}` (no citation known to emlib)."]
    lines = [
        f"# {title}", "", f"**Scale: {scale_label(run)}.** Made by emlib {__version__} from the run folder "
        f"`{run.folder.name}`.", "",
        "A reproduction of Kazimi, Ruzaeva, Sandfeld, *Self-Supervised Learning in Electron Microscopy: Towards a "
        "Foundation Model for Advanced Image Analysis* (arXiv 2402.18286) with emlib.", "",
        "## Data", "", *_data_lines(run), "",
        "## Training", "", *_training_lines(run), "",
        "## Validation", "", *_score_lines(run), "",
        f"The package's test input is {example}"
        f"{' (corrupted as in pretraining)' if run.kind == 'pretrain' else ''}, the first with an output that is "
        f"not all zero{', on a 0..255 scale' if segmentation(run) else ''}; the expected output was computed by "
        "emlib itself, and `bioimageio.core`'s model test reproduces it from the declared processing.", "",
        "## Inputs and outputs", "", io, "",
        f"Axes (batch, channel, y, x). Height and width: multiples of {multiple} (the network's size multiple), "
        f"at least {min_size(multiple, halo)}; for large images, predict in tiles and drop {halo} px at each "
        "inner tile edge (the output halo), as bioimageio.core and deepImageJ do"
        + (", which then equals one whole-image pass (the halo covers the network's reach)."
           if halo >= tiling.reach(run.network) else
           f"; the network's reach is {tiling.reach(run.network)} px, more than this halo, so tiles are approximate "
           "near their edges: predict whole images where memory allows."), "",
        "## Use it", "",
        "- deepImageJ (Fiji): install the package's zip (DeepImageJ Install Model); it runs the TorchScript weights.",
        "- ilastik: Neural Network Classification workflow, load the zip.",
        "- napari: the bioimageio plugin, or in Python: `bioimageio.core.predict(model=\"package.zip\", inputs=image)`.",
        f"- The `pytorch_state_dict` weights need no emlib: the network's source is in the package "
        f"(`{ARCHITECTURE_FILE}`{', which needs timm' if environment(run) else ''}).",
        f"- Height and width must be multiples of {multiple}: pad a larger image at its bottom and right first, e.g. "
        f"`numpy.pad(image, ((0, -image.shape[0] % {multiple}), (0, -image.shape[1] % {multiple})), mode=\"reflect\")`, "
        "and crop the output back.", "",
        "## Cite", "", cites, *missing, "",
        "## Licences", "",
        f"Weights and package: {LICENSE} (emlib). The training data keep their own terms: see the records cited "
        "above (synthetic data are emlib's own).", "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- export


def export(run_dir, out, authors=("emlib contributors",), overwrite: bool = True) -> Path:
    """Write the BioImage.IO package (.zip) of a finished fine-tuning or pretraining run; returns its path.
    overwrite=False refuses to replace an existing file (the CLI's default)."""
    from bioimageio.spec import save_bioimageio_package

    out = Path(out)
    if out.suffix != ".zip":
        raise ValueError(f"--out must name a .zip file, got {out}")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out} exists: replace it with --overwrite, or choose another file")
    run = read_run(run_dir)
    raw, expected, example = example_pair(run)
    halo = output_halo(run.network, min(raw.shape[-2:]))
    title = model_title(run)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"input": tmp / "test_input.npy", "output": tmp / "test_output.npy",
                 "sample_input": tmp / "sample_input.tif", "sample_output": tmp / "sample_output.tif",
                 "cover": tmp / "cover.png", "readme": tmp / "README.md", "architecture": tmp / ARCHITECTURE_FILE}
        np.save(files["input"], raw.numpy())
        np.save(files["output"], expected.numpy())
        tifffile.imwrite(files["sample_input"], raw.numpy(), photometric="minisblack")
        tifffile.imwrite(files["sample_output"], expected.numpy(), photometric="minisblack")
        files["architecture"].write_text(architecture_source(run))
        if environment(run):
            files["environment"] = tmp / ENVIRONMENT_FILE
            files["environment"].write_text(environment(run))
        save_cover(raw[0, 0].numpy(), expected[0, 0].float().numpy(), run, files["cover"])
        files["readme"].write_text(readme(run, example, title, halo))
        files["weights"], files["torchscript"] = save_weights(run, raw, tmp)
        description = describe(run, files, list(authors), halo)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_bioimageio_package(description, output_path=out)
    readable_by_all(out)
    return out


def readable_by_all(package: Path) -> None:
    """Rewrite the zip so that its files extract with mode 0644 (zipfile's writestr gives 0600)."""
    with zipfile.ZipFile(package) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    rewritten = package.with_name(package.name + ".tmp")
    with zipfile.ZipFile(rewritten, "w") as archive:
        for info, data in entries:
            info.external_attr = (0o100644 << 16) if not info.is_dir() else (0o40755 << 16)
            info.create_system = 3  # unix: the mode above is read
            archive.writestr(info, data)
    rewritten.replace(package)


# ----------------------------------------------------------------------------- command line


def add_cli(subparsers) -> None:
    """`python -m emlib export bioimageio RUN_DIR --out FILE.zip`."""
    parser = subparsers.add_parser("export", help="export a finished run as a model package",
                                   description="Export a finished run as a model package.")
    formats = parser.add_subparsers(dest="format", required=True)
    bioimageio = formats.add_parser("bioimageio", help="BioImage.IO model package (deepImageJ, ilastik, napari)",
                                    description=__doc__.splitlines()[0])
    bioimageio.add_argument("run_dir", help="a finished fine-tuning or pretraining run folder")
    bioimageio.add_argument("--out", required=True, help="the package to write (FILE.zip)")
    bioimageio.add_argument("--author", action="append", help="an author's name (repeatable)")
    bioimageio.add_argument("--overwrite", action="store_true", help="replace an existing --out file (refused without it)")
    bioimageio.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    path = export(args.run_dir, args.out, authors=args.author or ("emlib contributors",), overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
