"""The book's interactive explorers (ipywidgets) and the static figures that stand in for them.

A built book has no kernel, so each explorer comes with a figure of a grid of the
same settings; a notebook shows both (the widget is live in Jupyter and Colab, and
frozen at its first setting in the book).

    fixed_corruption       one deterministic corruption: a given noise std and blur sigma, optional flip / rot90
    corruption_grid        figure: the corrupted input A over a grid of noise x blur settings, and the flips
    corruption_explorer    widget: sliders for noise and blur, toggles for flip and rot90 -> A beside the target B
    load_pretraining_run   a finished pretraining run (emlib.runs.Run) whose held-out images are here
    held_out_images        the clean validation images of a run's own split
    restore                A, G(A), B and the L1 of G(A) and of A (the identity) for a corruption strength
    restoration_grid       figure: A and G(A) for a few strengths, with both L1s
    restoration_curve      mean L1 of G and of the identity at each of several strengths
    plot_restoration_curve figure of that curve
    restoration_explorer   widget: a held-out image and a strength -> A, G(A), B and both L1s

A corruption *strength* s scales the run's own corruption ranges: noise std
s * noise_std[1] and blur sigma s * blur_sigma[1], so s = 1 is the strongest
corruption pretraining drew (0.1 and 2 px by default). Flips and rotations are
augmentations applied to A and B alike, so the restoration explorers leave them out.

The noise of every setting comes from one seed: moving one slider changes only
its own setting, not the noise pattern. ipywidgets is imported only by the widget
functions (it is part of emlib's `book` extra).
"""
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from emlib import pretrain, runs
from emlib.data import Corruption

DIHEDRAL = ((False, False), (True, False), (False, True), (True, True))  # (flip, rot90)


def fixed_corruption(clean, noise_std=0.0, blur_sigma=0.0, flip=False, rot90=False, seed=0):
    """(corrupted A, target B) of clean images (1, H, W) or (B, 1, H, W) in [0, 1], with fixed settings.

    `emlib.data.Corruption` with the ranges (noise_std, noise_std) and (blur_sigma,
    blur_sigma), applied with probability 1; flip (horizontal) and rot90 (a quarter
    turn counter-clockwise) are applied to A and B alike when set. Same seed, same noise.
    """
    batch = clean if clean.ndim == 4 else clean.unsqueeze(0)
    if flip:
        batch = batch.flip(-1)
    if rot90:
        batch = torch.rot90(batch, 1, dims=(-2, -1))
    corruption = Corruption(noise_std=(noise_std, noise_std), blur_sigma=(blur_sigma, blur_sigma), p_noise=1.0,
                            p_blur=1.0, flip=False, rot90=False)
    corrupted, target = corruption(batch, torch.Generator().manual_seed(seed))
    if clean.ndim == 3:
        return corrupted[0], target[0]
    return corrupted, target


def _show(ax, image, title):
    ax.imshow(image.detach().squeeze().clamp(0, 1).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _l1(a, b) -> float:
    return (a - b).abs().mean().item()


# ----------------------------------------------------------------------------- the corruption


def corruption_grid(image, label, noise_stds=(0.0, 0.05, 0.1, 0.2), blur_sigmas=(0.0, 1.0, 2.0), seed=0):
    """Figure: A for every (blur, noise) setting (one row per blur sigma), the clean target B, and the
    four flip / rot90 toggles at the middle setting (bottom row). `label` names the data in the title."""
    columns = max(len(noise_stds), len(DIHEDRAL)) + 1
    fig, axes = plt.subplots(len(blur_sigmas) + 1, columns, figsize=(1.8 * columns, 1.95 * (len(blur_sigmas) + 1)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    _show(axes[0, 0], image, "target B (clean)")
    for row, blur in enumerate(blur_sigmas):
        for col, noise in enumerate(noise_stds, start=1):
            corrupted, target = fixed_corruption(image, noise, blur, seed=seed)
            _show(axes[row, col], corrupted, f"noise {noise:g}, blur {blur:g}\n|A - B| = {_l1(corrupted, target):.3f}")
    noise, blur = noise_stds[len(noise_stds) // 2], blur_sigmas[len(blur_sigmas) // 2]
    for col, (flip, rot90) in enumerate(DIHEDRAL, start=1):
        corrupted, target = fixed_corruption(image, noise, blur, flip, rot90, seed=seed)
        name = " + ".join(n for n, on in (("flip", flip), ("rot90", rot90)) if on) or "no flip / rot90"
        _show(axes[-1, col], corrupted, f"A: {name}")
    _show(axes[-1, 0], target, "B: flip + rot90\n(A and B turn alike)")
    fig.suptitle(f"Corrupted inputs A over a grid of settings ({label})\nrows: blur sigma (px); columns: noise std; "
                 f"bottom: flips and rotations at noise {noise:g}, blur {blur:g}", fontsize=10)
    fig.tight_layout()
    return fig


def corruption_explorer(image, label, noise_max=0.3, blur_max=4.0, seed=0):
    """Widget: noise std and blur sigma sliders, flip and rot90 toggles; draws A beside B (ipywidgets)."""
    import ipywidgets as widgets

    def draw(noise_std, blur_sigma, flip, rot90):
        corrupted, target = fixed_corruption(image, noise_std, blur_sigma, flip, rot90, seed=seed)
        fig, axes = plt.subplots(1, 2, figsize=(6, 3.3))
        _show(axes[0], corrupted, f"input A: noise {noise_std:g}, blur {blur_sigma:g}")
        _show(axes[1], target, "target B (clean" + (", flipped" if flip else "") + (", rotated" if rot90 else "") + ")")
        fig.suptitle(f"{label}; |A - B| = {_l1(corrupted, target):.3f}", fontsize=9)
        fig.tight_layout()
        plt.show()

    style = {"description_width": "initial"}
    return widgets.interactive(
        draw,
        noise_std=widgets.FloatSlider(value=0.05, min=0.0, max=noise_max, step=0.01, description="noise std",
                                      continuous_update=False, style=style),
        blur_sigma=widgets.FloatSlider(value=1.0, min=0.0, max=blur_max, step=0.1, description="blur sigma (px)",
                                       continuous_update=False, style=style),
        flip=widgets.Checkbox(value=False, description="flip"),
        rot90=widgets.Checkbox(value=False, description="rot90"),
    )


# ----------------------------------------------------------------------------- a pretrained generator


def load_pretraining_run(path, base=None) -> runs.Run:
    """A finished pretraining run (`emlib.runs.read`: the folder or its generator.safetensors) whose
    held-out images are here. A relative data_root is also looked up under `base` (e.g. the repository
    root, where the sweep ran); FileNotFoundError when the run's data_root is found nowhere."""
    run = runs.read(path, base=base)
    if run.kind != "pretrain":
        raise ValueError(f"{run.folder} is a fine-tuning run, not a pretraining run")
    data_root = run.config.data_root
    if data_root and not Path(data_root).is_dir():
        raise FileNotFoundError(f"{run.folder}: the run's data_root folder {data_root} is not here"
                                + (f" (nor under {base})" if base is not None else ""))
    return run


def held_out_images(run: runs.Run, limit=None) -> torch.Tensor:
    """The clean validation images (N, 1, S, S) of the run's own split (`emlib.runs.Run.images`)."""
    val = run.images("val")
    count = len(val) if limit is None else min(limit, len(val))
    return torch.stack([val[i] for i in range(count)])


def strength_settings(run: runs.Run, strength: float) -> tuple:
    """(noise std, blur sigma) of a strength: the run's largest noise and blur, times strength."""
    return strength * run.config.noise_std[1], strength * run.config.blur_sigma[1]


@torch.no_grad()
def restore(run: runs.Run, images, strength, seed=0) -> dict:
    """Corrupt images (N, 1, H, W) at `strength`, restore them with the run's generator.

    Returns {"input": A, "restored": G(A), "target": B, "l1_g": |G(A) - B| and
    "l1_identity": |A - B|, each a mean per image (N,) on the [0, 1] scale}.
    """
    noise, blur = strength_settings(run, strength)
    corrupted, target = fixed_corruption(images, noise, blur, seed=seed)
    restored = pretrain.restore_images(run.network, corrupted, run.config.centered)
    return {"input": corrupted, "restored": restored, "target": target,
            "l1_g": (restored - target).abs().mean(dim=(1, 2, 3)), "l1_identity": (corrupted - target).abs().mean(dim=(1, 2, 3))}


def restoration_grid(run: runs.Run, images, label, strengths=(0.25, 0.5, 1.0), seed=0):
    """Figure: per image (rows) the clean B, then A and G(A) for each strength, with their L1 to B."""
    columns = 1 + 2 * len(strengths)
    fig, axes = plt.subplots(len(images), columns, figsize=(1.75 * columns, 1.9 * len(images)), squeeze=False)
    outs = [restore(run, images, s, seed) for s in strengths]
    for row in range(len(images)):
        _show(axes[row, 0], outs[0]["target"][row], "target B")
        for k, (strength, out) in enumerate(zip(strengths, outs)):
            _show(axes[row, 1 + 2 * k], out["input"][row], f"A, strength {strength:g}\nL1 {out['l1_identity'][row]:.3f}")
            _show(axes[row, 2 + 2 * k], out["restored"][row], f"G(A)\nL1 {out['l1_g'][row]:.3f}")
    fig.suptitle(f"Held-out images restored at three corruption strengths ({label})", fontsize=10)
    fig.tight_layout()
    return fig


def restoration_curve(run: runs.Run, images, strengths=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5), seed=0) -> dict:
    """Mean L1 to B over `images` of G(A) and of A itself (the identity), per strength:
    {"strength": [...], "l1_g": [...], "l1_identity": [...], "n_images": N}."""
    outs = [restore(run, images, s, seed) for s in strengths]
    return {"strength": list(strengths), "l1_g": [o["l1_g"].mean().item() for o in outs],
            "l1_identity": [o["l1_identity"].mean().item() for o in outs], "n_images": len(images)}


def plot_restoration_curve(curve: dict, label, ax=None):
    """Figure of a `restoration_curve`: G's line against the identity's, the strongest corruption of pretraining marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(curve["strength"], curve["l1_g"], "o-", label="G(A)")
    ax.plot(curve["strength"], curve["l1_identity"], "s--", c="gray", label="identity: A itself")
    ax.axvline(1.0, ls=":", c="k", lw=0.8, label="strongest corruption of pretraining")
    ax.set_xlabel("corruption strength")
    ax.set_ylabel(f"mean L1 to B ({curve['n_images']} held-out images)")
    ax.set_title(f"Restoration vs corruption strength\n({label})", fontsize=10)
    ax.legend(fontsize=8)
    return ax.figure


def restoration_explorer(run: runs.Run, images, label, max_strength=1.5, seed=0):
    """Widget: a slider over the held-out images and one for the strength; draws A, G(A), B with both L1s."""
    import ipywidgets as widgets

    def draw(index, strength):
        out = restore(run, images[index:index + 1], strength, seed)
        fig, axes = plt.subplots(1, 3, figsize=(8, 3.1))
        _show(axes[0], out["input"][0], f"input A (identity)\nL1 {out['l1_identity'][0]:.4f}")
        _show(axes[1], out["restored"][0], f"G(A)\nL1 {out['l1_g'][0]:.4f}")
        _show(axes[2], out["target"][0], "target B (clean)")
        noise, blur = strength_settings(run, strength)
        fig.suptitle(f"held-out image {index}, strength {strength:g} (noise {noise:.3g}, blur {blur:.3g} px); {label}",
                     fontsize=9)
        fig.tight_layout()
        plt.show()

    style = {"description_width": "initial"}
    return widgets.interactive(
        draw,
        index=widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="held-out image",
                                continuous_update=False, style=style),
        strength=widgets.FloatSlider(value=1.0, min=0.0, max=max_strength, step=0.05, description="corruption strength",
                                     continuous_update=False, style=style),
    )
