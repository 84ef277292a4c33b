"""Images (Pillow: JPEG, PNG, WebP): size, format and mode, a perceptual hash, a thumbnail beside
the table, and only the EXIF tags the spec allows. GPS tags never leave: they are not among the
tags a spec may keep unless ``keep_gps`` says so, and thumbnails are written without EXIF.

The perceptual hash is a difference hash (dHash): the image in 9 by 8 grey pixels, one bit per
horizontally adjacent pair, so resized or re-encoded copies differ in a few bits at most.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.multimodal_processing.media_kinds import SideWriter, Unreadable

if TYPE_CHECKING:
    from PIL import Image

    from base_platform.pipelines.spec import MediaSource

GPS_IFD = 0x8825
FORMATS = ("JPEG", "PNG", "WEBP")


def dhash(image: Image.Image) -> str:
    from PIL import Image

    grey = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = grey.tobytes()  # one byte a pixel
    bits = 0
    for row in range(8):
        for column in range(8):
            left, right = pixels[row * 9 + column], pixels[row * 9 + column + 1]
            bits = (bits << 1) | (left > right)
    return f"{bits:016x}"


def _exif(image: Image.Image, source: MediaSource) -> tuple[str | None, bool]:
    """The allowed tags as JSON, and whether GPS tags were there and left out."""
    from PIL import ExifTags

    found = image.getexif()
    has_gps = GPS_IFD in found
    kept: dict[str, Any] = {}
    for tag, value in found.items():
        name = ExifTags.TAGS.get(tag, str(tag))
        if name in source.exif_keep and tag != GPS_IFD:
            kept[name] = value if isinstance(value, int | float | str) else str(value)
    if has_gps and source.keep_gps:
        kept["GPSInfo"] = {ExifTags.GPSTAGS.get(k, str(k)): str(v) for k, v in found.get_ifd(GPS_IFD).items()}
    return (json.dumps(kept, sort_keys=True) if kept else None), has_gps and not source.keep_gps


def extract(data: bytes, name: str, digest: str, source: MediaSource, side: SideWriter) -> dict[str, Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            if image.width * image.height > source.max_pixels:  # the header says: nothing decoded yet
                raise Unreadable(
                    f"{image.width} x {image.height} pixels, more than max_pixels ({source.max_pixels})"
                )
            image.load()  # decode now: a truncated body fails here, not later
            exif, gps_removed = _exif(image, source)
            thumb = image.convert("RGB")
            thumb.thumbnail((source.thumbnail_px, source.thumbnail_px))
            sink = io.BytesIO()
            thumb.save(sink, "WEBP", quality=80)  # no exif= : nothing of the original's EXIF
            return {
                "format": image.format,
                "width": str(image.width),
                "height": str(image.height),
                "mode": image.mode,
                "phash": dhash(image),
                "thumbnail": side(f"{digest}.webp", sink.getvalue()),
                "exif": exif,
                "gps_removed": str(gps_removed).lower(),
            }
    except Unreadable:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # Pillow's "broken"
        raise Unreadable(f"not a readable image: {type(exc).__name__}: {exc}") from exc
