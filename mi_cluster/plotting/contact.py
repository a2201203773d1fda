"""A contact sheet: every figure of a folder in one image, for a quick look at all of them
(thumbnails in rows, each captioned with its file name). Needs Pillow (the ``figures``
extra)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from mi_cluster.plotting.font import font_files

__all__ = ["contact_sheet"]

_CAPTION_PX = 15


def contact_sheet(
    images: Sequence[str | os.PathLike], *, columns: int = 6, thumb: int = 320
) -> bytes:
    """The PNG bytes of a sheet of ``images`` (PNG files), ``columns`` a row, each scaled
    to ``thumb`` pixels wide (its aspect kept) over its file name."""
    from PIL import Image, ImageDraw, ImageFont

    if not images:
        raise ValueError("no images for a contact sheet")
    if columns < 1 or thumb < 16:
        raise ValueError(f"columns must be >= 1 and thumb >= 16 px, got {columns} and {thumb}")
    thumbs = []
    for path in map(Path, images):
        with Image.open(path) as img:
            img = img.convert("RGB")
            height = max(1, round(img.height * thumb / img.width))
            thumbs.append((path.stem, img.resize((thumb, height), Image.Resampling.LANCZOS)))
    font = ImageFont.truetype(str(font_files()["normal"]), _CAPTION_PX)
    pad, caption = 12, _CAPTION_PX + 8
    rows = [thumbs[i : i + columns] for i in range(0, len(thumbs), columns)]
    heights = [max(t.height for _, t in row) + caption + pad for row in rows]
    sheet = Image.new("RGB", (columns * (thumb + pad) + pad, sum(heights) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for row, height in zip(rows, heights, strict=True):
        for k, (name, img) in enumerate(row):
            x = pad + k * (thumb + pad)
            label = name
            while draw.textlength(label, font=font) > thumb and len(label) > 4:
                label = label[:-4] + "..."
            draw.text((x, y), label, fill="#222222", font=font)
            sheet.paste(img, (x, y + caption))
            draw.rectangle(
                (x - 1, y + caption - 1, x + img.width, y + caption + img.height), outline="#cccccc"
            )
        y += height
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()
