"""Mask overlays with the referring expression written under the image.

Shared by the dataset check tool, the visualisation hook, the inferencer and the demos, so every picture
of a prediction in the project looks the same.
"""
import textwrap
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# BGR, as mmcv/cv2 images are.
PRED_COLOR = (40, 40, 230)
GT_COLOR = (60, 200, 60)


def _blend(image: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int],
           alpha: float, dim: float) -> np.ndarray:
    """Tint the mask and dim everything else, so the referent stands out whatever its colour."""
    out = image.astype(np.float32)
    sel = mask.astype(bool)
    out[sel] = (1 - alpha) * out[sel] + alpha * np.asarray(color, np.float32)
    out[~sel] *= dim
    return out.clip(0, 255).astype(np.uint8)


def _outline(image: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int]) -> np.ndarray:
    """Draw the one-pixel boundary of ``mask`` (so GT and prediction stay apart when both are shown)."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    out = image.copy()
    out[m & ~inner] = color
    return out


def draw_ris_overlay(image: np.ndarray,
                     mask: Optional[np.ndarray],
                     text: str,
                     gt_mask: Optional[np.ndarray] = None,
                     caption: Optional[str] = None,
                     alpha: float = 0.4,
                     dim: float = 0.45,
                     min_width: int = 320,
                     color: Tuple[int, int, int] = PRED_COLOR) -> np.ndarray:
    """Overlay a binary mask on an image and write the expression below it.

    Args:
        image (np.ndarray): BGR image, (H, W, 3) uint8.
        mask (np.ndarray, optional): (H, W) mask drawn filled in ``color``.
        text (str): The referring expression.
        gt_mask (np.ndarray, optional): Ground truth, drawn as a green outline.
        caption (str, optional): A second line, e.g. ``'IoU 0.83'``.
        alpha (float): Opacity of the filled mask.
        dim (float): Brightness factor outside the mask (1 keeps the image as it is).
        min_width (int): Small images are enlarged (nearest) to at least this width so text stays legible.
        color (tuple): BGR colour of the filled mask.

    Returns:
        np.ndarray: BGR image (H' + caption strip, W', 3) uint8.
    """
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    for name, m in (('mask', mask), ('gt_mask', gt_mask)):
        if m is not None and m.shape[:2] != (h, w):
            raise ValueError(f'draw_ris_overlay: {name} has shape {m.shape[:2]}, the image {(h, w)}')
    out = image.copy()
    if mask is not None:
        out = _blend(out, mask, color, alpha, dim)
    scale = max(1, int(np.ceil(min_width / max(w, 1))))

    def up(m):
        return np.repeat(np.repeat(m.astype(bool), scale, axis=0), scale, axis=1)

    if scale > 1:
        out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
    if mask is not None:
        out = _outline(out, up(mask), color)
    if gt_mask is not None:
        out = _outline(out, up(gt_mask), GT_COLOR)
    return _add_caption(out, [text] + ([caption] if caption else []))


def _add_caption(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    h, w = image.shape[:2]
    font_size = max(12, min(24, w // 24))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    chars = max(8, int(w / (font_size * 0.55)))
    wrapped = [seg for line in lines for seg in (textwrap.wrap(line, chars) or [''])]
    line_h = font_size + 6
    strip = Image.new('RGB', (w, line_h * len(wrapped) + 8), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for i, seg in enumerate(wrapped):
        draw.text((6, 4 + i * line_h), seg, fill=(255, 255, 255), font=font)
    strip_bgr = np.asarray(strip)[..., ::-1]
    return np.concatenate([image, strip_bgr], axis=0)
