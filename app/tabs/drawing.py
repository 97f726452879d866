"""Pictures for TensorBoard's Images tab, drawn with Pillow in a few milliseconds per epoch.

Both functions return an RGB uint8 array of shape (height, width, 3).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_FONT = ImageFont.load_default(size=13)
_SMALL = ImageFont.load_default(size=11)
_INK, _MUTED, _WRONG = (33, 33, 33), (110, 110, 110), (198, 40, 40)


def confusion_matrix(matrix: np.ndarray, class_names: list[str], title: str) -> np.ndarray:
    """A heat map of true class (rows) against predicted class (columns), counts in the cells.

    Colour is the share of the true class's images: blue on the diagonal (right), red off it
    (wrong; on a square-root scale, so that a handful of mistakes still shows). Rows are labelled
    with the class's number and name, columns with its number. Up to 20 classes the cells are 40
    pixels with their counts; with more they shrink (to 8 pixels at 100 classes) and above 25
    classes the counts are left out: the colours still show where the mistakes are.
    """
    n, left, top = len(matrix), 150, 62
    cell = max(8, min(40, 800 // max(n, 1)))
    counts_shown = cell >= 30
    image = Image.new("RGB", (left + n * cell + 12, top + n * cell + 12), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill=_INK, font=_FONT)
    draw.text((left, 26), "predicted class", fill=_MUTED, font=_SMALL)
    draw.text((8, 26), "true class", fill=_MUTED, font=_SMALL)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        if cell >= 16 or i % 5 == 0:
            draw.text((left + i * cell + cell // 2, top - 4), str(i), fill=_MUTED, font=_SMALL, anchor="mb")
        name = class_names[i] if class_names[i] == str(i) else f"{i}: {class_names[i]}"
        if cell >= 12 or i % 5 == 0:
            draw.text((left - 6, top + i * cell + cell // 2), _short(name, 22), fill=_MUTED,
                      font=_SMALL, anchor="rm")
        for j in range(n):
            x, y = left + j * cell, top + i * cell
            strength = shares[i, j] if i == j else min(1.0, np.sqrt(shares[i, j]) * 4)
            colour = (33, 102, 172) if i == j else _WRONG
            fill = tuple(int(255 - strength * (255 - c)) for c in colour)
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fill, outline=(230, 230, 230))
            if matrix[i, j] and counts_shown:
                ink = "white" if strength > 0.5 else _INK
                draw.text((x + cell // 2, y + cell // 2), str(int(matrix[i, j])), fill=ink,
                          font=_SMALL, anchor="mm")
    return np.asarray(image)


def picture_grid(images: np.ndarray, captions: list[tuple[str, str]], title: str, invert: bool,
                 columns: int = 8, side: int = 96) -> np.ndarray:
    """Tiles of uint8 images (k, height, width, 1 or 3), in their colours and proportions, each at most
    `side` pixels (small ones enlarged by whole multiples, crisp; large ones reduced), each captioned
    with two lines (true class, then predicted). `invert`: MNIST-style white on black, drawn dark on
    light like ink."""
    height, width = images.shape[1:3] if len(images) else (28, 28)
    factor = side / max(height, width)
    factor = max(1, int(factor)) if factor >= 1 else factor
    shown = (max(1, round(width * factor)), max(1, round(height * factor)))
    tile_w, tile_h = max(shown[0], 84) + 8, shown[1] + 34
    rows = max(1, -(-len(images) // columns))
    canvas = Image.new("RGB", (columns * tile_w + 8, 30 + rows * tile_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill=_INK, font=_FONT)
    for k, (pixels, (truth, predicted)) in enumerate(zip(images, captions, strict=True)):
        x, y = 8 + (k % columns) * tile_w, 30 + (k // columns) * tile_h
        pixels = 255 - pixels if invert else pixels
        picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        picture = picture.resize(shown, Image.NEAREST if factor >= 1 else Image.BILINEAR)
        canvas.paste(picture.convert("RGB"), (x, y))
        draw.text((x, y + shown[1] + 2), _short(truth, 15), fill=_INK, font=_SMALL)
        draw.text((x, y + shown[1] + 16), _short(predicted, 15), fill=_WRONG, font=_SMALL)
    if not len(images):
        draw.text((8, 40), "no mistakes", fill=_MUTED, font=_FONT)
    return np.asarray(canvas)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
