"""Pretraining cost, measured side by side in one process.

    python benchmarks/pretrain.py --quick               # CPU, small sizes
    python benchmarks/pretrain.py --size 224 --batch 128 --generators unet_4_424 hrnet_w18  # a GPU

Prints, per generator: the GAN step time (D step + G step), the generator-only
L1 step time (the adv_weight=0 ablation) and their ratio (the PatchGAN's share of
the cost); the DataLoader's throughput over what a training step consumes
(`loader/consumption ratio`, target >= 5); and on a GPU images/s for fp32 vs
AMP + channels_last (+ torch.compile with --compile).
"""
import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch.utils.data import DataLoader

from emlib import models, pretrain, session, training
from emlib.data import CEM500K, Corruption


def timed_steps(G, D, batch, device, amp, channels_last, steps, warmup=2):
    """Seconds per training step (D + G, or G alone when D is None): the fastest of
    `steps` timed steps, which is robust to other processes sharing the CPU."""
    G = training.prepare_model(G, device, channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = None
    if D is not None:
        D = training.prepare_model(D, device, channels_last)
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    scaler = training.make_grad_scaler(device, amp)
    config = pretrain.PretrainConfig.toy(adv_weight=1.0 if D is not None else 0.0)
    corrupted = training.to_device(batch[0], device, channels_last)
    target = training.to_device(batch[1], device, channels_last)

    def amp_context():
        return training.autocast(device, amp)

    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        pretrain.gan_step(G, D, opt_g, opt_d, scaler, corrupted, target, config, amp_context)
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times[warmup:])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh_models(name, compile_models=False):
    torch.manual_seed(0)
    G, D = models.init_weights(models.create(name)), models.init_weights(models.create("patchgan"))
    return training.maybe_compile(G, compile_models), training.maybe_compile(D, compile_models)


def gan_vs_l1(names, batch, device, steps):
    """Per generator: (GAN step s, L1-only step s)."""
    rows = []
    for name in names:
        G, D = fresh_models(name)
        gan = timed_steps(G, D, batch, device, amp=False, channels_last=False, steps=steps)
        G, _ = fresh_models(name)
        l1 = timed_steps(G, None, batch, device, amp=False, channels_last=False, steps=steps)
        rows.append((name, gan, l1))
    return rows


def write_tiff_folder(folder: Path, count: int, size: int = 224):
    """Random uint8 TIFF patches in CEM500K's format (decode cost does not depend on content)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        tifffile.imwrite(folder / f"patch{i:05d}.tif", rng.integers(0, 256, (size, size), dtype=np.uint8))
    return folder


def loader_images_per_s(folder, size, batch, workers, batches, corrupt_in_loader=False):
    """Images/s a pretraining DataLoader delivers (TIFF decode, pad, crop; optionally corruption)."""
    dataset = CEM500K(folder, split="train", image_size=size)
    data = training.SeededSamples(dataset, seed=0, corruption=Corruption() if corrupt_in_loader else None)
    sampler = training.ResumableSampler(data, seed=0)
    loader = DataLoader(data, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        persistent_workers=False, generator=torch.Generator())
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += len(next(iterator) if not corrupt_in_loader else next(iterator)[0])
        except StopIteration:
            break
    return seen / (time.perf_counter() - start)


def precision_table(names, batch, device, steps, with_compile):
    """Per generator: images/s for fp32, AMP + channels_last, and optionally + compile (GPU only)."""
    variants = [("fp32", False, False, False), ("amp+channels_last", True, True, False)]
    if with_compile:
        variants.append(("amp+channels_last+compile", True, True, True))
    rows = []
    for name in names:
        for label, amp, cl, comp in variants:
            G, D = fresh_models(name, comp)
            seconds = timed_steps(G, D, batch, device, amp, cl, steps, warmup=3 if not comp else 5)
            rows.append((name, label, batch[0].shape[0] / seconds))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generators", nargs="+", default=["unet_2_44", "unet_4_424", "hrnet_w18_small"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-root", help="a CEM500K TIFF folder (default: random TIFFs in a temp folder)")
    parser.add_argument("--device", default="auto", choices=session.DEVICES)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (GPU)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and batches")
    args = parser.parse_args(argv)
    device = session.select_device(args.device)
    steps = 3 if args.quick else args.steps
    print(f"device: {device}, image size {args.size}, batch {args.batch}, {steps} timed steps, torch threads {torch.get_num_threads()}")

    corrupt = Corruption()
    clean = torch.rand(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    batch = corrupt(clean, torch.Generator().manual_seed(1))

    print("\nGAN step (D + G) vs generator-only L1 step (fp32):")
    print(f"{'generator':>18} {'GAN step s':>11} {'L1 step s':>10} {'ratio':>6}")
    rows = gan_vs_l1(args.generators, batch, device, steps)
    for name, gan, l1 in rows:
        print(f"{name:>18} {gan:11.4f} {l1:10.4f} {gan / l1:6.2f}")

    fastest = min(gan for _, gan, _ in rows)
    consumed = args.batch / fastest
    with contextlib.ExitStack() as stack:
        folder = args.data_root
        if folder is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            folder = write_tiff_folder(tmp, count=max(8 * args.batch, 64))
        batches = 4 if args.quick else 16
        produced = loader_images_per_s(folder, args.size, args.batch, args.workers, batches)
        produced_corrupting = loader_images_per_s(folder, args.size, args.batch, args.workers, batches, corrupt_in_loader=True)
    print(f"\nloader ({args.workers} workers): {produced:.1f} images/s clean, {produced_corrupting:.1f} images/s with corruption in the loader")
    print(f"fastest training step consumes {consumed:.1f} images/s")
    print(f"loader/consumption ratio: {produced / consumed:.2f}")

    if device.type == "cuda":
        print("\nimages/s by precision (GAN step):")
        for name, label, ips in precision_table(args.generators, batch, device, steps, args.compile):
            print(f"{name:>18} {label:>26} {ips:9.1f}")
    else:
        print("\n(no GPU: the fp32 vs AMP + channels_last comparison runs on CUDA only)")


if __name__ == "__main__":
    main()
