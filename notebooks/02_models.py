# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The models
#
# The paper pretrains and fine-tunes two families of generators and uses one
# discriminator:
#
# - **U-Net_B_RF**, the residual U-Net of Sytwu et al. {cite:p}`sytwu2022receptive`
#   with B pooling levels and a receptive field of RF pixels: nine variants,
#   B in {2, 3, 4} and three receptive fields each;
# - **HRNet** {cite:p}`wang2021hrnet`, a much larger network that keeps a
#   high-resolution branch all the way through;
# - the **PatchGAN** discriminator of pix2pix {cite:p}`isola2017pix2pix`, used
#   only during pretraining.
#
# All of them come from one registry, `emlib.models.create(name)`, as plain
# `nn.Module`s. This chapter tabulates the U-Nets, measures their receptive
# fields and draws them over an electron micrograph, then looks at HRNet's
# multi-resolution design and at what the PatchGAN's "patch map" is.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% tags=["parameters"]
data_root = None  # None: synthetic data (emlib.data.ensure_synthetic); real: a folder with cem500k/
image_size = 224  # CEM500K patch size, the canvas of the receptive-field figure; paper: 224
flops_size = 224  # image side at which FLOPs are counted; paper trains at 224 (pretraining) and 448 (Au)
n_inputs = 4  # random inputs whose input gradients are summed to measure a receptive field
seed = 0  # seeds the random weights and the random inputs
figure_dpi = 80

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.patches import Rectangle

from emlib import data, models

plt.rcParams["figure.dpi"] = figure_dpi
root = data.ensure_synthetic() if data_root is None else Path(data_root)
source = "synthetic" if data.is_synthetic(root) else "real"
image = data.CEM500K(root / "cem500k", split="val", image_size=image_size, seed=seed)[0][0].numpy()
print(f"canvas: one {source} CEM500K validation image, {image.shape[0]}x{image.shape[1]}")


def seeded(name, **kwargs):
    """A registry model with reproducible random weights."""
    torch.manual_seed(seed)
    return models.create(name, **kwargs)


# %% [markdown]
# ## The U-Net family
#
# Each U-Net level is a residual block (3x3 conv-BN-ReLU, 3x3 conv-BN, a 1x1
# conv on the skip path, add, ReLU) with 4, 8, 16, ... channels. The encoder
# follows each block with 2x2 max pooling; the decoder upsamples (nearest), 
# concatenates the encoder's features of the same level and applies another
# block; a 1x1 convolution gives the output. Since the widths are fixed, all
# three variants with the same number of levels B have *the same parameters*:
# the receptive field is changed only through the dilation of the 3x3
# convolutions, one dilation per level (the last one is the bottleneck's).
# The dilation table is our reconstruction; with pooling 2 it gives
#
# $$\mathrm{RF} = 2^B + 8 \sum_{l<B} d_l\, 2^l + 4\, d_B\, 2^B,$$
#
# which reproduces the paper's nine receptive fields exactly. The table checks
# that formula against a walk over the layers (`models.receptive_field`) and
# against a measurement (`models.measure_receptive_field`, explained below).

# %%
rows = []
for name in models.names():
    if not name.startswith("unet_"):
        continue
    net = seeded(name)
    rows.append({
        "model": name, "B": net.depth, "dilations": ",".join(map(str, net.dilations)),
        "RF (formula)": models.receptive_field(net),
        "RF (measured)": models.measure_receptive_field(net, n_inputs=n_inputs, seed=seed),
        "parameters": f"{sum(p.numel() for p in net.parameters()):,}",
        f"GFLOPs at {flops_size}²": f"{models.flops(net, size=flops_size) / 1e9:.3g}",
    })
header = list(rows[0])
table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                  + ["| " + " | ".join(str(r[k]) for k in header) + " |" for r in rows])
display(Markdown("**The nine U-Nets (our implementation; measured RF with random weights, centre pixel)**\n\n" + table))

# %% [markdown]
# The parameter counts (8,069, 32,725 and 130,677 with one output channel) are
# those of Sytwu et al.'s networks; they are tiny by today's standards. The
# FLOPs count one forward pass of one image (2 FLOPs per multiply-add). Within a
# row of three variants, parameters and FLOPs are identical: dilation spreads
# the same taps further apart at no extra cost.
#
# ## Measuring a receptive field
#
# The formula is a statement about the architecture. To check it on the actual
# code, `measure_receptive_field` picks one output pixel, back-propagates it to
# the input and reports the extent of the pixels that received a non-zero
# gradient, summed over a few random inputs (a max pool passes the gradient
# only to its maximum, and a ReLU only where it is on, so a single input can
# hide some pixels). Two details matter:
#
# - the model runs in **eval mode**. In train mode BatchNorm normalises with the
#   mean and variance of the whole batch, so every output pixel depends on every
#   input pixel and the gradient would be dense: the measured "receptive field"
#   would be the whole image;
# - it runs in float64, so that the tiny gradients at the edge of the field are
#   not rounded away.
#
# The figure shows the measured field of the centre pixel of the three smallest
# U-Nets over the micrograph: colour is the gradient magnitude (log scale) and
# the dashed square is the formula's RF.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 4))
for ax, name in zip(axes, ["unet_2_44", "unet_3_96", "unet_4_200"]):
    net = seeded(name)
    influence = models.input_gradient(net, image_size, image_size, n_inputs=n_inputs, seed=seed).numpy()
    rows_hit, cols_hit = np.nonzero(influence.sum(1))[0], np.nonzero(influence.sum(0))[0]
    extent = max(np.ptp(rows_hit), np.ptp(cols_hit)) + 1
    shown = np.ma.masked_equal(influence, 0)
    ax.imshow(image, cmap="gray")
    ax.imshow(np.ma.log10(shown), cmap="magma", alpha=0.55)
    rf = models.receptive_field(net)
    centre = image_size // 2
    ax.add_patch(Rectangle((centre - rf / 2, centre - rf / 2), rf, rf, fill=False, ls="--", color="cyan"))
    ax.plot(centre, centre, "c+")
    ax.set_title(f"{name}: formula {rf}, measured {extent}", fontsize=9)
    ax.axis("off")
fig.suptitle(f"Receptive field of the centre pixel (random weights) over a {source} CEM500K image")
plt.tight_layout()
plt.show()

# %% [markdown]
# The gradient is strongest near the centre and fades towards the border of the
# field: the *effective* receptive field, the part that actually drives the
# output, is smaller than the theoretical one.
#
# ### Why the measurement and the formula differ
#
# For B = 2 the measured extent equals the formula; for B = 3 and 4 it can be
# smaller or larger by up to $2^B - 1$ pixels. The reason is pooling. A 2x2 max pool groups input
# pixels in fixed pairs, and nearest upsampling copies a coarse pixel to a
# fixed 2x2 block; which pairs an output pixel falls into depends on its
# position modulo $2^B$, its *phase* on the pooling grid. The formula assumes
# one particular alignment; the true field of a given pixel can be shifted by up
# to $2^B - 1$ pixels at either edge. The next cell measures every phase.

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for name in ["unet_2_44", "unet_3_96", "unet_4_200"]:
    net = seeded(name)
    size = models.receptive_field(net) + 4 * net.size_multiple
    base = size // 2 // net.size_multiple * net.size_multiple  # a pixel of phase 0 near the centre
    phases = range(net.size_multiple)
    measured = [models.measure_receptive_field(net, size=size, n_inputs=n_inputs, position=base + k, seed=seed)
                for k in phases]
    ax.plot(list(phases), [m - models.receptive_field(net) for m in measured], "o-", label=name)
ax.axhline(0, color="0.5", lw=0.8)
ax.set_xlabel("phase of the output pixel (row modulo $2^B$)")
ax.set_ylabel("measured - formula RF (px)")
ax.set_title("Measured RF by pooling phase (our models, random weights)", fontsize=10)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Why the receptive field matters for nanoparticles
#
# In a high-resolution TEM image a gold nanoparticle is recognised by its
# lattice fringes, but amorphous carbon can produce fringe-like speckle over a
# few nanometres. A pixel classifier that sees only a small window cannot tell
# the two apart; one that sees a whole particle and some background around it
# can. Sytwu et al. {cite:p}`sytwu2022receptive` varied the receptive field at
# fixed complexity and found that segmentation improves as the field grows
# relative to the particle size, and that more complex networks are more
# confident. Kazimi et al. {cite:p}`kazimi2024selfsupervised` revisit the same
# nine U-Nets and find that after GAN pretraining the small-RF, low-complexity
# models catch up with or beat the large ones trained from scratch, which is
# the question the later chapters test.
#
# ## HRNet: many resolutions in parallel
#
# A U-Net throws resolution away on the way down and recovers it on the way up.
# HRNet instead keeps four branches at 1/4, 1/8, 1/16 and 1/32 of the input
# resolution side by side and repeatedly exchanges information between them,
# so a high-resolution representation exists at every depth. Our HRNetV2 head
# (`emlib/models/hrnet.py`) upsamples the four branches to the 1/4 branch,
# concatenates them, mixes them with a 1x1 conv-BN-ReLU, maps to the output
# channels and upsamples bilinearly back to the input size. The paper does
# not name its width; `hrnet_w44` (about 55M parameters) follows the authors'
# earlier EM work and the smaller widths serve CPU runs.

# %%
net = seeded("hrnet_w18_small")
with torch.no_grad():
    branches = net.backbone(torch.zeros(1, 1, image_size, image_size))
print(f"branches of hrnet_w18_small for a {image_size}x{image_size} input:")
for level, f in enumerate(branches):
    print(f"  1/{image_size // f.shape[-1]:<3} {tuple(f.shape[1:])}")
lines = ["| model | parameters | GFLOPs at %d² |" % flops_size, "|---|---|---|"]
for name in [n for n in models.generator_names() if n.startswith("hrnet")]:
    net = seeded(name)
    lines.append(f"| {name} | {sum(p.numel() for p in net.parameters()) / 1e6:.3g}M"
                 f" | {models.flops(net, size=flops_size) / 1e9:.3g} |")
display(Markdown("**HRNet widths (our implementation: timm backbone + HRNetV2 head, one output channel)**\n\n"
                 + "\n".join(lines)))

# %% [markdown]
# Even the smallest HRNet has more than ten times the parameters of the largest
# U-Net, and `hrnet_w44` about 400 times. HRNet's branches are fused at every
# stage, so there is no single chain of layers to walk for a receptive-field
# formula; `models.receptive_field` refuses it and only the measurement applies.
#
# ## The PatchGAN discriminator
#
# The pix2pix discriminator does not output one real/fake score per image but
# a *patch map*: a grid of scores, each looking at one 70x70 window of the
# pair (corrupted input A, clean or generated image B) stacked as two channels.
# Judging local patches pushes the generator towards realistic texture
# everywhere, while the L1 term of the loss takes care of the low frequencies.
# The figure draws the measured input windows of three cells of the patch map.

# %%
disc = seeded("patchgan")
pair = torch.from_numpy(np.stack([image, image]))[None]
with torch.no_grad():
    patch_map = disc.eval()(pair)
n_params = sum(p.numel() for p in disc.parameters())
print(f"patchgan: {n_params:,} parameters, RF {models.receptive_field(disc)} px, "
      f"input {tuple(pair.shape)} -> patch map {tuple(patch_map.shape)}")
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(image, cmap="gray")
for (row, col), colour in zip([(5, 5), (13, 13), (20, 8)], ["red", "orange", "cyan"]):
    influence = models.input_gradient(disc, image_size, image_size, n_inputs=1, position=(row, col), seed=seed)
    rows_hit, cols_hit = np.nonzero(influence.sum(1).numpy())[0], np.nonzero(influence.sum(0).numpy())[0]
    axes[0].add_patch(Rectangle((cols_hit[0], rows_hit[0]), np.ptp(cols_hit) + 1, np.ptp(rows_hit) + 1,
                                fill=False, color=colour, lw=2))
    axes[1].add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, color=colour, lw=2))
axes[0].set_title(f"input ({source} CEM500K), 3 windows", fontsize=9)
axes[1].imshow(patch_map[0, 0].numpy(), cmap="gray")
axes[1].set_title(f"patch map {patch_map.shape[-2]}x{patch_map.shape[-1]} (untrained)", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.suptitle("PatchGAN: each score judges one 70x70 window (random weights)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Windows of neighbouring cells are 8 pixels apart (three stride-2 layers) and
# overlap heavily. With 2,764,609 parameters the discriminator is larger than
# every U-Net generator it trains; it is thrown away after pretraining.
#
# **In code.** Create any model with `models.create(name, in_channels,
# out_channels)`; `models.names()` lists them. `models.save_weights` /
# `models.load_weights` store weights as safetensors with the model name, and
# `models.transfer_weights(model, path)` loads a pretrained generator into a
# downstream model of the same architecture, re-initialising the output head
# when the number of output channels differs. Throughput of every generator
# on CPU and GPU: `python benchmarks/models.py`.
