"""The CPU fast path (bf16 autocast, channels_last), measured side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/cpu_fast_path.py            # the real study's networks and sizes
    OMP_NUM_THREADS=1 python benchmarks/cpu_fast_path.py --quick    # fewer rounds
    OMP_NUM_THREADS=1 python benchmarks/cpu_fast_path.py --compile  # also torch.compile (inductor) on top

For each case the four variants (fp32, channels_last, bf16 autocast, both) get their own
copy of one seeded network and optimiser, and are timed in turn, round after round, so that
a machine that gets busier or quieter affects them alike. Printed: the median seconds of
fp32 and each variant's speed-up over it (fp32 time / variant time), and what `"auto"` picks
on this machine. Cases:

- training step (forward, backward, Adam) of one network on a BCE loss, batch 8: the
  fine-tuning step (unet_2_44 / unet_4_200 / hrnet_w18_small at 192 px) and the generator
  alone at the pretraining sizes (96, 128 px); the PatchGAN alone (2-channel input);
- the whole GAN step of pretraining (D step + G step, `emlib.pretrain.gan_step`), batch 8;
- whole-image evaluation (no grad) of a 1024 x 608 image, EMPS-sized.

With --compile, the fine-tuning and GAN steps are also measured under torch.compile on top of
the fast path, with the compile time, and the speed-up over a ten-minute run is printed
(compile time included); emlib adopts compile on CPUs only if that is at least 1.2x.
"""
import argparse
import copy
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from emlib import models, pretrain, training

VARIANTS = {"fp32": (None, False), "channels_last": (None, True), "bf16": (torch.bfloat16, False),
            "bf16+channels_last": (torch.bfloat16, True)}
BATCH = 8


class Case:
    """One thing to time in every variant: `setup(dtype, channels_last) -> step()`."""

    def __init__(self, label, network, setup):
        self.label, self.network, self.setup = label, network, setup


def network_step(name, size, in_channels=1):
    """A training step of registry network `name` on random (B, C, size, size) images, BCE loss."""
    torch.manual_seed(0)
    base = models.create(name, in_channels=in_channels)
    inputs = torch.rand(BATCH, in_channels, size, size, generator=torch.Generator().manual_seed(1))

    def setup(dtype, channels_last, compile=False):
        net = training.prepare_model(copy.deepcopy(base), torch.device("cpu"), channels_last)
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
        net = torch.compile(net) if compile else net
        x = training.to_device(inputs, torch.device("cpu"), channels_last)

        def step():
            with training.autocast(torch.device("cpu"), dtype):
                out = net(x)
            loss = F.binary_cross_entropy_with_logits(out.float(), torch.zeros_like(out, dtype=torch.float32))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step
    return setup


def gan_step(generator, size):
    """`emlib.pretrain.gan_step` (D step + G step) of `generator` and the PatchGAN."""
    torch.manual_seed(0)
    G0, D0 = models.create(generator), models.create("patchgan")
    g = torch.Generator().manual_seed(1)
    corrupted, target = torch.rand(BATCH, 1, size, size, generator=g) * 2 - 1, torch.rand(BATCH, 1, size, size, generator=g) * 2 - 1
    config = pretrain.PretrainConfig.toy(image_size=size)
    device = torch.device("cpu")

    def setup(dtype, channels_last, compile=False):
        G = training.prepare_model(copy.deepcopy(G0), device, channels_last)
        D = training.prepare_model(copy.deepcopy(D0), device, channels_last)
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        G, D = (torch.compile(G), torch.compile(D)) if compile else (G, D)
        scaler = training.make_grad_scaler(device, dtype)
        a, b = training.to_device(corrupted, device, channels_last), training.to_device(target, device, channels_last)

        def step():
            pretrain.gan_step(G, D, opt_g, opt_d, scaler, a, b, config, lambda: training.autocast(device, dtype))
        return step
    return setup


def evaluation(name, height=608, width=1024):
    """One whole-image forward pass in eval mode, no grad (what fine-tuning's evaluation does per image)."""
    torch.manual_seed(0)
    base = models.create(name).eval()
    image = torch.randn(1, 1, height, width, generator=torch.Generator().manual_seed(1))

    def setup(dtype, channels_last, compile=False):
        net = training.prepare_model(copy.deepcopy(base), torch.device("cpu"), channels_last)
        net = torch.compile(net) if compile else net
        x = training.to_device(image, torch.device("cpu"), channels_last)

        @torch.no_grad()
        def step():
            with training.autocast(torch.device("cpu"), dtype):
                net(x).float()
        return step
    return setup


def cases(quick: bool):
    out = [
        Case("fine-tune step unet_2_44 192 px", "unet_2_44", network_step("unet_2_44", 192)),
        Case("fine-tune step unet_4_200 192 px", "unet_4_200", network_step("unet_4_200", 192)),
        Case("fine-tune step hrnet_w18_small 192 px", "hrnet_w18_small", network_step("hrnet_w18_small", 192)),
        Case("generator step unet_2_44 96 px", "unet_2_44", network_step("unet_2_44", 96)),
        Case("generator step unet_4_200 128 px", "unet_4_200", network_step("unet_4_200", 128)),
        Case("generator step hrnet_w18_small 128 px", "hrnet_w18_small", network_step("hrnet_w18_small", 128)),
        Case("PatchGAN step (2-ch input) 128 px", "patchgan", network_step("patchgan", 128, in_channels=2)),
        Case("GAN step unet_2_44 + PatchGAN 96 px", "unet_2_44", gan_step("unet_2_44", 96)),
        Case("GAN step unet_2_44 + PatchGAN 128 px", "unet_2_44", gan_step("unet_2_44", 128)),
        Case("GAN step unet_4_200 + PatchGAN 128 px", "unet_4_200", gan_step("unet_4_200", 128)),
        Case("GAN step hrnet_w18_small + PatchGAN 128 px", "hrnet_w18_small", gan_step("hrnet_w18_small", 128)),
        Case("evaluation unet_2_44 1024x608", "unet_2_44", evaluation("unet_2_44")),
        Case("evaluation unet_4_200 1024x608", "unet_4_200", evaluation("unet_4_200")),
        Case("evaluation hrnet_w18_small 1024x608", "hrnet_w18_small", evaluation("hrnet_w18_small")),
    ]
    return out[:1] + out[7:8] + out[11:12] if quick else out


def time_alternated(case: Case, rounds: int, warmup: int = 2) -> dict:
    """{variant: median seconds per call}, the variants timed in turn within each round."""
    steps = {name: case.setup(*settings) for name, settings in VARIANTS.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    return alternate(steps, rounds)


def alternate(steps: dict, rounds: int) -> dict:
    """{name: median seconds} of the `steps` called in turn, `rounds` times each."""
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def compiled_speedup(case: Case, rounds: int, run_seconds: float = 600.0) -> tuple:
    """(compile seconds, steady speed-up of torch.compile on top of bf16 + channels_last, and its
    speed-up over a `run_seconds` run with the compile time paid)."""
    dtype, channels_last = VARIANTS["bf16+channels_last"]
    steps = {"plain": case.setup(dtype, channels_last), "compiled": case.setup(dtype, channels_last, compile=True)}
    start = time.perf_counter()
    steps["compiled"]()  # compiles forward and backward
    compile_s = time.perf_counter() - start
    steps["plain"]()
    seconds = alternate(steps, rounds)
    plain_s, compiled_s = seconds["plain"], seconds["compiled"]
    steps_plain = run_seconds / plain_s
    steps_compiled = max(0.0, run_seconds - compile_s) / compiled_s
    return compile_s, plain_s / compiled_s, steps_compiled / steps_plain


def auto_choice(network: str) -> str:
    """What amp="auto" / channels_last="auto" choose on this machine for `network`."""
    device = torch.device("cpu")
    dtype = training.amp_dtype(device, "auto")
    layout = training.use_channels_last(device, "auto", models.create(network, in_channels=1))
    return f"{'bf16' if dtype else 'fp32'}{'+cl' if layout else ''}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three cases, fewer rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per variant (default 7, quick 3)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile on top of the fast path")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"native bf16: {training.cpu_has_native_bf16()}, batch {BATCH}, median of {rounds} alternated rounds")
    header = f"| case | fp32 s | {' | '.join(v for v in VARIANTS if v != 'fp32')} | auto picks |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for case in cases(args.quick):
        seconds = time_alternated(case, rounds)
        ratios = " | ".join(f"{seconds['fp32'] / seconds[v]:.2f}x" for v in VARIANTS if v != "fp32")
        print(f"| {case.label} | {seconds['fp32']:.3f} | {ratios} | {auto_choice(case.network)} |", flush=True)
    if args.compile:
        print("\ntorch.compile (inductor) on top of bf16 + channels_last:")
        for case in cases(False):
            if case.label.startswith(("fine-tune step unet_2_44", "GAN step unet_2_44 + PatchGAN 96")):
                compile_s, steady, ten_minutes = compiled_speedup(case, rounds)
                print(f"  {case.label}: compile {compile_s:.0f} s, steady {steady:.2f}x, "
                      f"over a ten-minute run {ten_minutes:.2f}x", flush=True)


if __name__ == "__main__":
    main()
