"""Thumbnails with Pillow (the optional ``thumbnails`` extra). Blocking: run in a thread.

Dimensions are checked from the image header before anything is decoded
(``Image.open`` is lazy), so a small file that claims billions of pixels (a
"decompression bomb") is refused without allocating its pixels.

Spec: client-server API, "Content repository", "Thumbnails": "crop" gives the
requested aspect ratio, "scale" keeps the original's; never upscale.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

THUMBNAILABLE = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/apng"})


class ThumbnailError(Exception):
    """The content cannot be thumbnailed (not an image Pillow can read)."""


class ImageTooLarge(ThumbnailError):
    """The image has more pixels than ``max_image_pixels``."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    animated: bool


@dataclass(frozen=True, slots=True)
class Thumbnail:
    width: int  # the box asked for
    height: int
    method: str
    content_type: str
    data: bytes


def pillow_available() -> bool:
    """Whether Pillow is installed, without importing it (it is imported when first used)."""
    import importlib.util

    try:
        return importlib.util.find_spec("PIL") is not None
    except (ImportError, ValueError):
        return False


def _open(path: Path, max_pixels: int) -> Image:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # installed but broken (e.g. a wheel for another CPU)
        raise ThumbnailError(f"Pillow cannot be loaded: {e}") from None

    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageTooLarge("image is too large to thumbnail") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ThumbnailError(f"not an image that can be thumbnailed: {e}") from None
    if im.width * im.height > max_pixels or im.width <= 0 or im.height <= 0:
        im.close()
        raise ImageTooLarge(f"image has {im.width}x{im.height} pixels; the limit is {max_pixels}")
    return im


def probe(path: Path, max_pixels: int) -> ImageInfo:
    """The image's size and whether it is animated, from its header."""
    im = _open(path, max_pixels)
    with im:
        return ImageInfo(im.width, im.height, bool(getattr(im, "is_animated", False)))


def output_type(source_type: str) -> str:
    """Thumbnails of JPEGs are JPEGs; everything else becomes PNG (keeps transparency)."""
    return "image/jpeg" if source_type == "image/jpeg" else "image/png"


def generate(
    path: Path, source_type: str, sizes: list[tuple[int, int, str]], max_pixels: int
) -> list[Thumbnail]:
    """Make a thumbnail for each (width, height, method) box the image is larger than.

    Boxes the image already fits in are skipped: the original serves those.

    Raises:
        ImageTooLarge: more pixels than ``max_pixels``.
        ThumbnailError: not a readable image.
    """
    from PIL import Image

    im = _open(path, max_pixels)
    ctype = output_type(source_type)
    out: list[Thumbnail] = []
    try:
        with im:
            original = im.size
            im.seek(0)
            try:
                im.draft("RGB", _largest_needed(im.size, sizes))  # JPEG: decode at 1/2..1/8
                frame = im.convert("RGBA" if _has_alpha(im) else "RGB")
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise ThumbnailError(f"cannot decode the image: {e}") from None
        for width, height, method in sizes:
            if original[0] <= width and original[1] <= height:
                continue
            if method == "crop":
                thumb = _crop(frame, width, height)
            else:
                thumb = _scale(frame, width, height)
            out.append(Thumbnail(width, height, method, ctype, _encode(thumb, ctype)))
    except MemoryError:
        raise ImageTooLarge("not enough memory to thumbnail this image") from None
    return out


def _largest_needed(size: tuple[int, int], sizes: list[tuple[int, int, str]]) -> tuple[int, int]:
    w, h = size
    need_w = need_h = 1
    for bw, bh, method in sizes:
        factor = max(bw / w, bh / h) if method == "crop" else min(bw / w, bh / h)
        need_w = max(need_w, int(w * factor) + 1)
        need_h = max(need_h, int(h * factor) + 1)
    return (min(w, need_w), min(h, need_h))


def _has_alpha(im: Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _scale(im: Image, width: int, height: int) -> Image:
    """The largest size with the image's aspect ratio that fits in width x height."""
    from PIL import Image

    factor = min(width / im.width, height / im.height, 1.0)
    size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
    return im.resize(size, Image.Resampling.LANCZOS)


def _crop(im: Image, width: int, height: int) -> Image:
    """Exactly width x height (less if the image is smaller), from the centre."""
    from PIL import Image

    shrink = min(1.0, im.width / width, im.height / height)
    tw, th = max(1, round(width * shrink)), max(1, round(height * shrink))
    factor = max(tw / im.width, th / im.height)
    sw, sh = max(tw, round(im.width * factor)), max(th, round(im.height * factor))
    scaled = im.resize((sw, sh), Image.Resampling.LANCZOS)
    left, top = (sw - tw) // 2, (sh - th) // 2
    return scaled.crop((left, top, left + tw, top + th))


def _encode(im: Image, ctype: str) -> bytes:
    buf = io.BytesIO()
    if ctype == "image/jpeg":
        im.convert("RGB").save(buf, "JPEG", quality=80, optimize=True)
    else:
        im.save(buf, "PNG", optimize=False)
    return buf.getvalue()
