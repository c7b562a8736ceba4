"""`python -m emlib predict MODEL IMAGES... --out DIR`: a trained model applied to a user's images.

MODEL is a finished fine-tuning run folder (best_model.safetensors), a pretraining
run folder (generator.safetensors: a restoration model) or a BioImage.IO package
that emlib exported (.zip). IMAGES are files or folders (searched recursively) of
2-D images of any size, format and bit depth that emlib reads (`emlib.data.images`:
uint8 / 255, other types between their 0.1 and 99.9 percentiles); a multi-page TIFF
(a stack) is predicted page by page and written as a stack.

Every image is predicted whole by overlapping tiles (`emlib.predict`, exact), so
any size fits in memory. A segmentation model trained on images read at 1/n of their
size (`FinetuneConfig.downsample`) sees each image so, and its logits are resized
back (bilinear): the outputs always have the input's size. Written under --out, with the input's path below the folder
it came from:

    NAME_mask.tif          segmentation: uint8, 255 = particle (logit > 0), 0 elsewhere
    NAME_probability.tif   with --probabilities: float32 sigmoid of the logits
    NAME_restored.tif      restoration: float32, the [0, 1] scale
    qc/NAME.png            the first --qc images: input beside the result (masks in red)
"""
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from emlib import finetune, models, qc, runs, session
from emlib.data.images import IMAGE_SUFFIXES, downsample, find_images, page_count, read_unit
from emlib.intensity import CenteredIntensities
from emlib.pretrain import PretrainConfig
from emlib.tiling import predict as predict_tiled

SEGMENTATION = finetune.SEGMENTATION
AMP_CHOICES = {"auto": "auto", "on": True, "off": False}  # --amp -> emlib.predict's amp


@dataclass
class Model:
    """A network ready for images: segmentation (standardised image in, logits out) or
    restoration ([0, 1] in, [0, 1] out)."""

    network: torch.nn.Module
    task: str
    origin: str
    downsample: int = 1  # the network sees images at 1/n of their size per side (FinetuneConfig.downsample)

    @property
    def segmentation(self) -> bool:
        return self.task == SEGMENTATION


def load_model(path) -> Model:
    """The model a run folder or an emlib BioImage.IO package holds (eval mode, CPU)."""
    path = Path(path)
    if path.suffix.lower() == ".zip" and path.is_file():
        return _from_package(path)
    if (path / "best_model.safetensors").is_file():
        network, config = runs.load_finetuned(path)
        return Model(network, config.task, f"fine-tuning run {path}", config.downsample)
    if (path / "generator.safetensors").is_file() and (path / "config.json").is_file():
        config = PretrainConfig.from_dict(json.loads((path / "config.json").read_text()))
        network = models.load(path / "generator.safetensors", expected_name=config.model)
        return Model(_restoration(network, config.centered), "restoration", f"pretraining run {path}")
    raise FileNotFoundError(f"model {path} is neither a finished run folder (best_model.safetensors or "
                            "generator.safetensors) nor a BioImage.IO package (.zip)")


def _restoration(network, centered: bool) -> torch.nn.Module:
    return (CenteredIntensities(network) if centered else network).eval()


def _from_package(path: Path) -> Model:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            description = yaml.safe_load(archive.read(next(n for n in ("rdf.yaml", "bioimageio.yaml") if n in names)))
            emlib_config = (description.get("config") or {}).get("emlib") or {}
            weights_file = description["weights"]["pytorch_state_dict"]["source"]
            state = torch.load(io.BytesIO(archive.read(weights_file)), map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, StopIteration, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a BioImage.IO package with pytorch_state_dict weights: {err!r}") from None
    run_config = emlib_config.get("run_config")
    if not run_config:
        raise ValueError(f"{path} was not exported by emlib (no config.emlib.run_config): run it with bioimageio.core")
    network = models.create(run_config["model"], in_channels=1, out_channels=1)
    network.load_state_dict(state)
    network.eval()
    if emlib_config.get("run_kind") == "pretrain":
        return Model(_restoration(network, run_config.get("centered", True)), "restoration", f"package {path}")
    task = finetune.canonical_task(run_config["task"])
    return Model(finetune.for_task(network, task).eval(), task, f"package {path}", run_config.get("downsample", 1))


def image_files(inputs) -> list:
    """[(path, its path relative to the folder given, or its name)] of every image file the inputs name."""
    found = []
    for given in map(Path, inputs):
        if given.is_dir():
            found += [(given / relative, Path(relative)) for relative in find_images(given, IMAGE_SUFFIXES)]
        elif given.is_file():
            found.append((given, Path(given.name)))
        else:
            raise FileNotFoundError(f"image or folder not found: {given}")
    return found


@torch.no_grad()
def predict_image(model: Model, image: np.ndarray, device, amp="auto") -> np.ndarray:
    """The model's output for one [0, 1] image, at the image's size: logits (segmentation) or the restored image."""
    standardize = "per_image" if model.segmentation else None
    output = predict_tiled(model.network, downsample(image, model.downsample), standardize=standardize, device=device,
                           amp=amp)
    if output.shape == image.shape:
        return output
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(output))[None, None], size=image.shape, mode="bilinear")
    return resized[0, 0].numpy()


def run(model_path, inputs, out, probabilities=False, n_qc=3, device="auto", amp="auto") -> list:
    """Predict every image the inputs name into `out` (see the module docstring); returns the files written."""
    model = load_model(model_path)
    device = session.select_device(device)
    model.network.to(device)
    files, out, written = image_files(inputs), Path(out), []
    print(f"model: {model.task} ({model.origin}); {len(files)} image file(s) -> {out}")
    for index, (path, relative) in enumerate(tqdm(files, desc="predict", unit="image")):
        pages = page_count(path)
        inputs_ = [read_unit(path, page if pages > 1 else None) for page in range(pages)]
        outputs = [predict_image(model, image, device, amp) for image in inputs_]
        stem = out / relative.parent / relative.stem
        written += write_outputs(model, outputs, stem, probabilities)
        if index < n_qc:
            written.append(write_qc(model, inputs_[0], outputs[0], out / "qc" / relative.parent / f"{relative.stem}.png"))
    return written


def write_outputs(model: Model, outputs: list, stem: Path, probabilities: bool) -> list:
    """The mask (and probability) or restored TIFF of one input file; a stack stays a stack."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack(outputs) if len(outputs) > 1 else outputs[0]
    if not model.segmentation:
        return [_write(stem.with_name(f"{stem.name}_restored.tif"), stack.astype(np.float32))]
    files = [_write(stem.with_name(f"{stem.name}_mask.tif"), ((stack > 0) * 255).astype(np.uint8))]
    if probabilities:
        files.append(_write(stem.with_name(f"{stem.name}_probability.tif"), (1 / (1 + np.exp(-stack))).astype(np.float32)))
    return files


def _write(path: Path, array: np.ndarray) -> Path:
    tifffile.imwrite(path, array, photometric="minisblack")  # (pages, H, W): a stack, never an RGB image
    return path


def write_qc(model: Model, image: np.ndarray, output: np.ndarray, path: Path) -> Path:
    """input | result: the mask over the image in red, or the restored image."""
    if model.segmentation:
        return qc.save_panels(path, [("input", image), ("mask", qc.overlay(image, output > 0))])
    return qc.save_panels(path, [("input", image), ("restored", np.clip(output, 0, 1))])


# ----------------------------------------------------------------------------- command line


def add_cli(subparsers) -> None:
    """`python -m emlib predict MODEL IMAGES... --out DIR`."""
    parser = subparsers.add_parser("predict", help="predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a finished run folder or an emlib BioImage.IO package (.zip)")
    parser.add_argument("images", nargs="+", help="image files or folders (TIFF, PNG, BMP; stacks page by page)")
    parser.add_argument("--out", required=True, help="the folder to write into")
    parser.add_argument("--probabilities", action="store_true", help="segmentation: also write the probabilities")
    parser.add_argument("--qc", type=int, default=3, metavar="N", help="QC overlays (PNG) of the first N images (default 3)")
    parser.add_argument("--device", default="auto", choices=session.DEVICES, help="where to run (default: auto)")
    parser.add_argument("--amp", default="auto", choices=tuple(AMP_CHOICES),
                        help="mixed precision as training uses it: auto (bf16/fp16 where the machine has it), on, off "
                             "(fp32: exactly one whole-image pass) (default: auto)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    written = run(args.model, args.images, args.out, args.probabilities, args.qc, args.device, AMP_CHOICES[args.amp])
    print(f"wrote {len(written)} file(s) under {args.out}")
    return 0
