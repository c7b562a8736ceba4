"""Training throughput of every generator: forward + backward images/s.

    python benchmarks/models.py            # 224x224, batch 8, CPU (and CUDA when present)
    python benchmarks/models.py --quick    # fewer iterations

Each step is one forward pass, an L1 loss and one backward pass in train mode
(no optimizer step). CUDA runs use bf16 autocast and channels_last, as training does.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from emlib import models


def images_per_second(name: str, device: str, size: int, batch: int, steps: int, warmup: int) -> float:
    """Forward+backward throughput of registry model `name` on random (batch, 1, size, size) inputs."""
    torch.manual_seed(0)
    model = models.create(name).to(device).train()
    x = torch.randn(batch, 1, size, size, device=device)
    if device == "cuda":
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    for step in range(warmup + steps):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast:
            loss = F.l1_loss(model(x).float(), x)
        model.zero_grad(set_to_none=True)
        loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps per model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", nargs="*", default=models.generator_names())
    args = parser.parse_args(argv)
    steps, warmup = (2, 1) if args.quick else (10, 3)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name in tqdm(args.models, desc="models"):
        model = models.create(name)
        params = sum(p.numel() for p in model.parameters())
        gflops = models.flops(model, size=args.size) / 1e9
        speeds = [images_per_second(name, d, args.size, args.batch, steps, warmup) for d in devices]
        rows.append((name, params, gflops, *speeds))
    print(f"\nforward+backward, {args.size}x{args.size}, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" + (f", GPU {torch.cuda.get_device_name()}" if len(devices) > 1 else ""))
    header = f"{'model':<16} {'params':>11} {'GFLOPs/img':>10}" + "".join(f" {d + ' img/s':>11}" for d in devices)
    print(header + "\n" + "-" * len(header))
    for name, params, gflops, *speeds in rows:
        print(f"{name:<16} {params:>11,} {gflops:>10.3g}" + "".join(f" {s:>11.3g}" for s in speeds))


if __name__ == "__main__":
    main()
