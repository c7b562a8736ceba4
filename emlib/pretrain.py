"""Self-supervised GAN pretraining: Pix2Pix with a least-squares loss (paper section 3.2).

The generator G sees a corrupted CEM500K image A (noise, blur; flips and rot90
applied to A and the clean target B alike) and learns to return B. A PatchGAN
discriminator D scores (A, B) pairs as real and (A, G(A)) pairs as fake. Per batch:

    D step: L_D = 0.5 * (MSE(D(A, B), 1) + MSE(D(A, G(A)), 0))
    G step: L_G = adv_weight * MSE(D(A, G(A)), 1) + l1_weight * |G(A) - B|_1

Adam (lr 2e-4, betas 0.5, 0.999), weights N(0, 0.02), validation L1 every epoch
on a fixed, seeded, corrupted validation set. adv_weight=0 trains G with L1 only
(no D: the ablation). Only the generator is exported (`generator.safetensors` +
`model_card.json`), for fine-tuning.

With `centered=True` (default) G and D work on intensities mapped from [0, 1]
to [-1, 1], as pix2pix does (`emlib.intensity`; the model card's `config.centered`
says which). Validation L1 is always reported on the [0, 1] scale.

Every sample is a pure function of (seed, epoch, index) and every device-side
corruption of (seed, step, rank), so a run resumed from a checkpoint continues
exactly like one that was never stopped, whatever the number of loader workers.
"""
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from emlib import __version__, atomic, data, finite, lifecycle, models, provenance, run_folder, session, training
from emlib.config import check_config_types, config_from_dict, config_to_dict, fields_from_args, upgrade
from emlib.data import Corruption, ImageFolder
from emlib.intensity import CenteredIntensities, from_centered, to_centered

LOG_COLUMNS = ["epoch", "step", "d_loss", "g_adv", "g_l1", "d_real", "d_fake", "lr", "images_per_s"]
VAL_COLUMNS = ["epoch", "step", "val_l1"]
CORRUPT_ON = ("device", "loader")
VAL_SEED_OFFSET = 1_000_003  # the validation corruptions use their own seed stream
# Fields that may change between a checkpoint and its resumption (lr: to continue a
# diverged run at a lower one; data_root / manifest_path: the data fingerprint decides;
# amp / channels_last: the mode they resolve to must be the checkpoint's, checked instead).
RESUME_MAY_GROW = ("epochs", "max_steps")
RESUME_IGNORED = ("device", "workers", "output_dir", "checkpoint_every", "log_every", "compile", "deterministic", "data_root",
                  "manifest_path", "lr", "amp", "channels_last")
SMALLER_RUN_FLAGS = "--toy (a CPU preset), --max-steps, --image-size or --batch-size"


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run. Defaults are the paper's GPU settings;
    `PretrainConfig.toy()` is a CPU preset on synthetic data."""

    model: str = "unet_4_424"  # the generator: a name of emlib.models.generator_names()
    data_root: str | None = None  # folder of EM images (TIFF/PNG/BMP, searched recursively); None = synthetic CEM500K
    subset: int | None = None  # train images: None = every image of the folder (paper: 50k, 100k, 200k of CEM500K)
    image_size: int = 224
    batch_size: int = 128  # per process
    epochs: int = 60
    steps_per_epoch: int | None = None  # cap on batches per epoch (None = the whole subset)
    max_steps: int | None = None  # stop after this many steps in total (None = epochs decide)
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    l1_weight: float = 100.0
    adv_weight: float = 1.0  # 0 = L1-only ablation (no discriminator)
    noise_std: tuple = Corruption.noise_std  # the corruption's fields and defaults: emlib.data.Corruption
    blur_sigma: tuple = Corruption.blur_sigma
    p_noise: float = Corruption.p_noise
    p_blur: float = Corruption.p_blur
    flip: bool = Corruption.flip
    rot90: bool = Corruption.rot90
    corrupt_on: str = "device"  # "device": batched on the GPU; "loader": per sample in the workers
    centered: bool = True  # G and D see intensities mapped from [0, 1] to [-1, 1] (the pix2pix convention)
    val_limit: int | None = None  # use only the first n validation images (None = all, paper 5000)
    seed: int = 0  # model init, data order, corruptions
    split_seed: int = 0  # the CEM500K train/val/test split and the fixed validation corruptions
    manifest_path: str | None = None  # the split's JSON; None = output_dir/manifest.json
    tiles_per_image: bool = False  # a large image gives one train item per image_size tile it holds
    device: str = "auto"
    amp: bool | str = "auto"  # bf16/fp16 autocast: True, False or "auto" (CUDA; CPUs with native bf16), emlib.training
    channels_last: bool | str = "auto"  # memory layout: True, False or "auto" (CUDA; per network on bf16 CPUs)
    compile: bool = False
    workers: int = 8  # loader processes, at most the machine's cores
    deterministic: bool = False
    output_dir: str = "runs/pretrain"
    checkpoint_every: int = 1000  # steps; 0 = only at epoch ends
    log_every: int = 1  # steps between log.csv rows

    def __post_init__(self):
        self.betas, self.noise_std, self.blur_sigma = tuple(self.betas), tuple(self.noise_std), tuple(self.blur_sigma)
        self.validate()

    @classmethod
    def toy(cls, **overrides) -> "PretrainConfig":
        """A CPU preset: synthetic data, the smallest U-Net, 64 px, batch 8, tens of steps."""
        toy = dict(model="unet_2_44", subset=None, image_size=64, batch_size=8, epochs=3, steps_per_epoch=8,
                   val_limit=16, device="cpu", amp=False, channels_last=False, workers=0,
                   output_dir="runs/pretrain_toy", checkpoint_every=0)
        return cls(**{**toy, **overrides})

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PretrainConfig":
        """From a dict of fields; unknown keys raise ValueError naming them."""
        return config_from_dict(cls, data)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field. Values only: the run checks
        that data_root exists when it starts (so a run folder loads without its data)."""
        check_config_types(self)
        if self.model not in models.generator_names():
            raise ValueError(f"model={self.model!r} is not a generator; choose one of {models.generator_names()}")
        positive = {"image_size": self.image_size, "batch_size": self.batch_size, "epochs": self.epochs, "lr": self.lr}
        for name in ("subset", "steps_per_epoch", "max_steps", "val_limit"):
            if getattr(self, name) is not None:
                positive[name] = getattr(self, name)
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name in ("l1_weight", "adv_weight", "checkpoint_every", "workers", "seed", "split_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.l1_weight == 0 and self.adv_weight == 0:
            raise ValueError("l1_weight and adv_weight are both 0: nothing to train")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.corrupt_on not in CORRUPT_ON:
            raise ValueError(f"corrupt_on must be one of {CORRUPT_ON}, got {self.corrupt_on!r}")
        if self.device not in session.DEVICES:
            raise ValueError(f"device must be one of {session.DEVICES}, got {self.device!r}")
        training.check_mode("amp", self.amp)
        training.check_mode("channels_last", self.channels_last)
        min_size = patchgan_min_size()
        if self.adv_weight > 0 and self.image_size < min_size:
            raise ValueError(f"image_size={self.image_size} is smaller than the PatchGAN's minimum input ({min_size} px)")
        self.corruption()  # its own checks name noise_std, blur_sigma, p_noise, p_blur

    def corruption(self):
        """The `emlib.data.Corruption` these fields describe."""
        return Corruption(noise_std=self.noise_std, blur_sigma=self.blur_sigma, p_noise=self.p_noise,
                          p_blur=self.p_blur, flip=self.flip, rot90=self.rot90)


# ----------------------------------------------------------------------------- config from fields


def make_config(fields: dict, toy: bool = False) -> PretrainConfig:
    """The config of a dict of fields (renamed ones upgraded) over the defaults, or over
    `PretrainConfig.toy()` with `toy`: what `python -m emlib pretrain` and the sweep run."""
    base = PretrainConfig.toy() if toy else PretrainConfig()
    return config_from_dict(PretrainConfig, {**config_to_dict(base), **upgrade(fields)})


def config_from_args(args) -> PretrainConfig:
    """The config of parsed `python -m emlib pretrain` arguments (--toy, --config, flags)."""
    return make_config(fields_from_args(PretrainConfig, args), args.toy)


def field_help() -> dict:
    """What the values of each field mean, for `--help`."""
    return {
        "model": f"the generator: {', '.join(models.generator_names())}",
        "data_root": "any folder of 2-D EM images (TIFF, PNG, BMP; stacks page by page), searched recursively; "
                     "unset: the synthetic CEM500K stand-in",
        "subset": "train on the first n train images of the split (the paper: 50000, 100000, 200000); none: every image",
    }


# ----------------------------------------------------------------------------- the models


def patchgan_min_size(n_layers: int = 3) -> int:
    """The smallest square input for which the PatchGAN still returns a patch map."""
    for size in range(1, 512):
        s = size
        for _ in range(n_layers):
            s = (s + 2 - 4) // 2 + 1  # 4x4 conv, stride 2, padding 1
        if s - 2 >= 1:  # two 4x4 convs, stride 1, padding 1
            return size
    raise AssertionError("unreachable")


def build_models(config: PretrainConfig):
    """(G, D) freshly initialised N(0, 0.02); D is None for the L1-only ablation."""
    generator = models.create(config.model, in_channels=1, out_channels=1)
    models.init_weights(generator)
    multiple = getattr(generator, "size_multiple", 1)
    if config.image_size % multiple:
        raise ValueError(f"image_size={config.image_size} must be a multiple of {multiple} for generator {config.model!r}")
    discriminator = None
    if config.adv_weight > 0:
        discriminator = models.create("patchgan", in_channels=2)
        models.init_weights(discriminator)
    return generator, discriminator


# ----------------------------------------------------------------------------- losses and the two updates


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """LSGAN: 0.5 * (MSE(D(A, B), 1) + MSE(D(A, G(A)), 0))."""
    return 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))


def generator_losses(d_fake: torch.Tensor | None, fake: torch.Tensor, target: torch.Tensor):
    """(MSE(D(A, G(A)), 1), L1(G(A), B)); the adversarial term is 0 without a D."""
    adv = F.mse_loss(d_fake, torch.ones_like(d_fake)) if d_fake is not None else fake.new_zeros(())
    return adv, F.l1_loss(fake, target)


def discriminator_step(D, opt_d, scaler, corrupted, target, fake, amp_context) -> dict:
    """One D update on real (A, B) and fake (A, G(A).detach()) pairs."""
    with amp_context():
        d_real = D(torch.cat([corrupted, target], 1))
        d_fake = D(torch.cat([corrupted, fake.detach()], 1))
        loss = discriminator_loss(d_real.float(), d_fake.float())
    opt_d.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt_d)
    return {"d_loss": loss.detach(), "d_real": d_real.detach().float().mean(), "d_fake": d_fake.detach().float().mean()}


def generator_step(opt_g, D, scaler, corrupted, target, fake, config, amp_context, freeze_d=True) -> dict:
    """One G update: adversarial + l1_weight * L1. D's weights get no update (its
    gradients are either not computed, `freeze_d`, or zeroed before its next step)."""
    if D is not None and freeze_d:
        D.requires_grad_(False)
    with amp_context():
        d_fake = D(torch.cat([corrupted, fake], 1)).float() if D is not None else None
        g_adv, g_l1 = generator_losses(d_fake, fake.float(), target.float())
        loss = config.adv_weight * g_adv + config.l1_weight * g_l1
    opt_g.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt_g)
    if D is not None and freeze_d:
        D.requires_grad_(True)
    return {"g_adv": g_adv.detach(), "g_l1": g_l1.detach()}


def gan_step(G, D, opt_g, opt_d, scaler, corrupted, target, config, amp_context, freeze_d=True) -> dict:
    """D step then G step on one batch (the losses of the module docstring); returns the detached losses."""
    with amp_context():
        fake = G(corrupted)
    losses = {}
    if D is not None:
        losses.update(discriminator_step(D, opt_d, scaler, corrupted, target, fake, amp_context))
    losses.update(generator_step(opt_g, D, scaler, corrupted, target, fake, config, amp_context, freeze_d))
    scaler.update()
    return losses


# ----------------------------------------------------------------------------- data


def resolve_data_root(config: PretrainConfig):
    """(folder of images, "synthetic" | "real"): data_root as given, or the synthetic CEM500K when None."""
    return data.pretraining_folder(config.data_root)


def manifest_path(config: PretrainConfig) -> Path:
    """Where the run's train/val/test split is stored: `manifest_path`, else the run folder (never the data folder)."""
    return Path(config.manifest_path) if config.manifest_path else Path(config.output_dir) / "manifest.json"


def build_datasets(config: PretrainConfig, folder: Path):
    """(train subset, validation set of fixed corrupted pairs, manifest hash) of the image folder."""
    common = dict(image_size=config.image_size, seed=config.split_seed, manifest_path=manifest_path(config),
                  tiles_per_image=config.tiles_per_image)
    train = ImageFolder(folder, split="train", subset=config.subset, **common)
    val = ImageFolder(folder, split="val", **common)
    if config.val_limit is not None:
        val = Subset(val, range(min(config.val_limit, len(val))))
    val = training.SeededSamples(val, config.split_seed + VAL_SEED_OFFSET, config.corruption())
    return train, val, train.manifest_hash


def steps_in_epoch(config: PretrainConfig, n_samples_per_rank: int) -> int:
    """Full batches per epoch on one rank (a last partial batch is dropped), capped by steps_per_epoch."""
    steps = n_samples_per_rank // config.batch_size
    if steps == 0:
        raise ValueError(f"batch_size={config.batch_size} is larger than the {n_samples_per_rank} training images per process")
    return min(steps, config.steps_per_epoch) if config.steps_per_epoch else steps


def to_model_range(images: torch.Tensor, config: PretrainConfig) -> torch.Tensor:
    """[0, 1] intensities -> what G and D see: [-1, 1] when `config.centered` (emlib.intensity)."""
    return to_centered(images) if config.centered else images


@torch.no_grad()
def restore_images(G, images: torch.Tensor, centered: bool = True) -> torch.Tensor:
    """Run a pretrained generator on [0, 1] images as pretraining trained it; returns the [0, 1] scale."""
    return CenteredIntensities(G)(images) if centered else G(images)


@torch.no_grad()
def identity_l1(val_set) -> float:
    """Mean |A - B| over the validation pairs: the L1 of a generator that returns its input."""
    total, count = 0.0, 0
    for corrupted, target in DataLoader(val_set, batch_size=64):
        total += (corrupted - target).abs().sum().item()
        count += target.numel()
    return total / count


@torch.no_grad()
def validation_l1(G, val_set, config: PretrainConfig, ctx: session.DistributedContext, dtype=None,
                  channels_last: bool = False) -> float:
    """Mean |G(A) - B| over the fixed validation pairs (shared out over ranks), G in autocast `dtype` (None: fp32)."""
    G = training.unwrap_model(G)
    was_training = G.training
    G.eval()
    shard = Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size))
    loader = DataLoader(shard, batch_size=config.batch_size, num_workers=training.loader_workers(config.workers),
                        worker_init_fn=training.worker_init(),
                        pin_memory=ctx.device.type == "cuda", generator=torch.Generator())
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for corrupted, target in training.start_workers(loader):
        corrupted = to_model_range(training.to_device(corrupted, ctx.device, channels_last), config)
        target = training.to_device(target, ctx.device, channels_last)
        with training.autocast(ctx.device, dtype):
            fake = G(corrupted).float()
        fake = from_centered(fake) if config.centered else fake  # back to [0, 1]
        total[0] += (fake - target).abs().sum().double()
        total[1] += target.numel()
    G.train(was_training)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
    return float(total[0] / total[1])


# ----------------------------------------------------------------------------- export


def toy_generator(model: str, output_dir, seed: int = 0) -> Path:
    """Pretrain generator `model` with the toy preset (CPU, synthetic data) and return the export's folder.

    The downstream chapters use it when no real pretrained generator is given.
    """
    config = PretrainConfig.toy(model=model, output_dir=str(output_dir), seed=seed, deterministic=True)
    run(config, overwrite=True)
    return Path(config.output_dir)


def export_generator(G, config, output_dir: Path, info: dict) -> dict:
    """Write generator.safetensors and model_card.json (what fine-tuning loads)."""
    card = {
        "model": config.model,
        "task": "pix2pix_lsgan_pretraining",
        "in_channels": 1,
        "out_channels": 1,
        "emlib_version": __version__,
        "config": config.to_dict(),
        **info,
    }
    metadata = {"source": info["source"], "steps": str(info["steps"])}  # the architecture: the header's name
    models.save_weights(training.unwrap_model(G), output_dir / "generator.safetensors", metadata)
    atomic.write_json(output_dir / "model_card.json", card)
    return card


# ----------------------------------------------------------------------------- the run


def run(config: PretrainConfig, resume: bool = False, overwrite: bool = True) -> dict:
    """Pretrain the generator `config.model`; returns the run summary (see summary.json).

    Under `torchrun` this is DistributedDataParallel training (rank 0 logs and
    writes). resume=True continues from output_dir/checkpoint.pt when it exists
    (and says so, then starts fresh, when it does not); a resume that is refused
    (other config, other data, a corrupt checkpoint) leaves the folder untouched.
    overwrite=False refuses to start afresh over a finished run (the CLI's default;
    notebooks re-run their cells, so the API's default is True). The folder is
    locked for the run: a second run into it raises run_folder.RunFolderLockedError.
    A SIGINT/SIGTERM saves a checkpoint and returns a summary with status
    "interrupted" and the signal's name (no summary.json); a NaN/inf loss raises
    NonFiniteLossError, NaN/inf weights NonFiniteWeightsError (never saved).
    """
    return lifecycle.run(config, _run, resume, overwrite)


def _run(config: PretrainConfig, ctx: session.DistributedContext, resuming: bool) -> dict:
    output_dir, device = Path(config.output_dir), ctx.device
    folder, source = resolve_data_root(config)
    if not resuming and config.manifest_path is None:  # a new run makes its own split, whatever an old run's said
        if ctx.is_main:
            manifest_path(config).unlink(missing_ok=True)
        session.barrier()
    train_set, val_set, manifest_hash = build_datasets(config, folder)
    content = run_folder.content_fingerprint(folder, data.images.find_images(folder))
    corruption = config.corruption()
    train_data = training.SeededSamples(train_set, config.seed, corruption if config.corrupt_on == "loader" else None)
    sampler = training.ResumableSampler(train_data, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed)
    epoch_steps = steps_in_epoch(config, sampler.num_samples)

    G, D = build_models(config)
    dtype = training.amp_dtype(device, config.amp)
    layouts = {"generator": training.use_channels_last(device, config.channels_last, G)}
    G = training.prepare_model(G, device, layouts["generator"])
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=config.betas)
    opt_d = None
    if D is not None:
        layouts["discriminator"] = training.use_channels_last(device, config.channels_last, D)
        D = training.prepare_model(D, device, layouts["discriminator"])
        opt_d = torch.optim.Adam(D.parameters(), lr=config.lr, betas=config.betas)
    fast_path = training.fast_path_summary(dtype, layouts)
    scaler = training.make_grad_scaler(device, dtype)
    position, val_history = {"epoch": 0, "batches_done": 0, "step": 0}, []
    holders = {"generator": G, "discriminator": D, "opt_g": opt_g, "opt_d": opt_d, "scaler": scaler, "rng": lifecycle.RNG,
               "position": position, "val_history": val_history}
    checkpoint = lifecycle.Checkpoint(output_dir, config, holders, data=manifest_hash, fast_path=fast_path, content=content,
                                      may_grow=RESUME_MAY_GROW, ignore=RESUME_IGNORED, map_location=device)
    if resuming:
        checkpoint.restore()
    lifecycle.start_folder(ctx, config, fast_path)
    G_run = training.maybe_compile(session.wrap_ddp(G, ctx), config.compile)
    D_run = training.maybe_compile(session.wrap_ddp(D, ctx), config.compile) if D is not None else None

    def amp_context():
        return training.autocast(device, dtype)

    loggers = {}
    if ctx.is_main:
        resume_step = position["step"] if resuming else None
        loggers["log"] = run_folder.CSVLogger(output_dir / "log.csv", LOG_COLUMNS, resume_step)
        loggers["val"] = run_folder.CSVLogger(output_dir / "validation.csv", VAL_COLUMNS, resume_step)

    def run_validation():
        val_l1 = validation_l1(G_run, val_set, config, ctx, dtype, layouts["generator"])
        val_history.append((position["epoch"], position["step"], val_l1))
        if ctx.is_main:
            loggers["val"].log({"epoch": position["epoch"], "step": position["step"], "val_l1": val_l1})
        return val_l1

    total_steps = config.epochs * epoch_steps
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    meter, status = training.Throughput(), "finished"
    estimate = training.RunEstimate(epoch_steps, total_steps, position["step"], SMALLER_RUN_FLAGS, enabled=ctx.is_main)
    workers = training.loader_workers(config.workers)
    progress = training.progress_bar(total_steps, f"pretrain {config.model}", initial=position["step"],
                                     disable=not ctx.is_main)
    with training.StopRequest() as stop:
        while position["step"] < total_steps and status == "finished":
            epoch = position["epoch"]
            sampler.set_epoch(epoch, start_index=position["batches_done"] * config.batch_size)
            train_data.epoch = epoch
            loader = DataLoader(train_data, batch_size=config.batch_size, sampler=sampler, num_workers=workers,
                                pin_memory=device.type == "cuda", drop_last=True, worker_init_fn=training.worker_init(),
                                generator=torch.Generator().manual_seed(training.sample_seed(config.seed, epoch)))
            for batch in training.start_workers(loader):
                position["step"] += 1
                position["batches_done"] += 1
                step = position["step"]
                corrupted, target = _pair(batch, corruption, config, ctx, step, layouts["generator"])
                losses = gan_step(G_run, D_run, opt_g, opt_d, scaler, corrupted, target, config, amp_context,
                                  freeze_d=not ctx.distributed)
                values = _checked_values(losses, step, ctx)
                images_per_s = meter.update(config.batch_size * ctx.world_size)
                estimate.step()
                if ctx.is_main and step % config.log_every == 0:
                    loggers["log"].log({"epoch": epoch, "step": step, "lr": opt_g.param_groups[0]["lr"],
                                        "images_per_s": images_per_s, **values})
                progress.update(1)
                progress.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in ("d_loss", "g_l1")} | {"img/s": f"{images_per_s:.3g}"}, refresh=False)
                epoch_done = position["batches_done"] >= epoch_steps
                if epoch_done:
                    run_validation()
                    position.update(epoch=epoch + 1, batches_done=0)
                if session.all_reduce_any(stop.requested, device):
                    status = "interrupted"
                if epoch_done or status != "finished" or step >= total_steps or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    checkpoint.save(ctx)
                if epoch_done or status != "finished" or step >= total_steps:
                    break
    progress.close()
    if status == "interrupted":
        return lifecycle.interrupted(ctx, stop, f"at step {position['step']}", checkpoint, step=position["step"])

    if not val_history or val_history[-1][1] != position["step"]:
        run_validation()
        checkpoint.save(ctx)
    info = {
        "source": source,
        "data_root": str(folder),
        "subset": len(train_set),
        "manifest_hash": manifest_hash,
        "image_size": config.image_size,
        "steps": position["step"],
        "epochs": round(position["step"] / epoch_steps, 4),
        "images_seen": position["step"] * config.batch_size * ctx.world_size,
        "world_size": ctx.world_size,
        "fast_path": fast_path,
        "final_val_l1": val_history[-1][2],
        "identity_val_l1": identity_l1(val_set),  # the baseline G(A) = A on the same validation pairs
        **provenance.provenance(device),
        "val_l1": [list(v) for v in val_history],
    }
    summary = {"status": "finished", "model": config.model, "output_dir": str(output_dir),
               "wall_s": checkpoint.wall_s(), **info}
    return lifecycle.finish(ctx, config, summary, lambda: export_generator(G, config, output_dir, info))


def _pair(batch, corruption, config, ctx, step, channels_last=False):
    """(corrupted, target) on the device; corrupts there with a (seed, step, rank) generator when asked."""
    if config.corrupt_on == "loader":
        corrupted, target = batch
        corrupted = training.to_device(corrupted, ctx.device, channels_last)
        target = training.to_device(target, ctx.device, channels_last)
    else:
        clean = training.to_device(batch, ctx.device)
        generator = torch.Generator(device=ctx.device).manual_seed(training.sample_seed(config.seed, step, ctx.rank))
        corrupted, target = corruption(clean, generator)
        if channels_last:
            corrupted = corrupted.contiguous(memory_format=torch.channels_last)
            target = target.contiguous(memory_format=torch.channels_last)
    return to_model_range(corrupted, config), to_model_range(target, config)


def _checked_values(losses: dict, step: int, ctx) -> dict:
    """The losses as floats (mean over ranks); a NaN/inf raises NonFiniteLossError."""
    names = list(losses)
    stacked = session.all_reduce_mean(torch.stack([losses[n].float() for n in names]))
    values = dict(zip(names, stacked.tolist()))
    finite.check_finite(step, **values)
    return values
