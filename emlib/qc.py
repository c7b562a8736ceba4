"""Quality-control images: what a model did to an image, as a PNG a person can check at a glance.

    qc.save_panels(path, [("input", image), ("mask", overlay(image, mask))])

Images are shown min-max scaled to 8 bits; a mask is drawn over its image in red
(`overlay`), as ZeroCostDL4Mic's QC pages do. Fine-tuning writes `qc/` of a few test
predictions beside its scores; `python -m emlib predict` writes a few of its own.
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

RED = np.array([255, 40, 40], np.float32)
MAX_SIDE = 512  # panels larger than this are shown shrunk


def to_uint8(image) -> np.ndarray:
    """(H, W) min-max scaled to 0..255 (a constant image becomes 0)."""
    image = np.asarray(image, np.float32)
    low, high = float(image.min()), float(image.max())
    return ((image - low) / max(high - low, 1e-8) * 255).round().astype(np.uint8)


def overlay(image, mask, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8: the grey image with the mask's pixels tinted red."""
    grey = np.repeat(to_uint8(image)[..., None], 3, axis=-1).astype(np.float32)
    inside = np.asarray(mask) > 0
    grey[inside] = (1 - alpha) * grey[inside] + alpha * RED
    return grey.round().astype(np.uint8)


def save_panels(path, panels) -> Path:
    """Side-by-side panels [(title, (H, W) grey or (H, W, 3) RGB image)] with titles, as one PNG."""
    path = Path(path)
    tiles = []
    for title, panel in panels:
        panel = np.asarray(panel)
        tile = Image.fromarray(panel if panel.ndim == 3 else to_uint8(panel)).convert("RGB")
        scale = min(1.0, MAX_SIDE / max(tile.size))
        if scale < 1:
            tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), Image.BILINEAR)
        tiles.append((title, tile))
    header = 16
    width = sum(t.width for _, t in tiles) + 4 * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, header + max(t.height for _, t in tiles)), "white")
    draw, left = ImageDraw.Draw(canvas), 0
    for title, tile in tiles:
        canvas.paste(tile, (left, header))
        draw.text((left + 2, 2), title, fill="black")
        left += tile.width + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
