"""Images and texts as the web serves them: the rules that turn them into
RGB pixels and clean strings, shared by the training pipeline and the data
builder (see docs/DATA.md). No JAX here: builder workers import it.
"""

from __future__ import annotations

import html
import io
import math

import numpy as np
from PIL import Image, ImageOps

# Decompression-bomb guard: larger images are skipped before decoding.
MAX_PIXELS = 8192 * 8192
EXIF_ORIENTATION = 0x0112


def clean_text(text: str) -> str:
  """HTML entities decoded (`&amp;` → `&`, `&#39;` → `'`), control and other
  non-printing characters turned into spaces, runs of whitespace collapsed,
  ends stripped. (Texts longer than the context are cut by the tokenizer,
  which keeps the EOT token.)"""
  text = html.unescape(text)
  return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


class ImageTooLarge(ValueError):
  pass


def check_text(value) -> tuple[str | None, str | None]:
  """(the text, None), or (None, problem) with problem 'non_utf8' (bytes that
  are not UTF-8, or a str read with errors='surrogateescape' that holds
  such bytes) or 'empty' (missing, or nothing left once cleaned). The text
  comes back as given: callers clean it when they use it."""
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError:
      return None, "non_utf8"
  if not isinstance(value, str):
    return None, "empty"
  if any("\udc80" <= ch <= "\udcff" for ch in value):
    return None, "non_utf8"
  if not clean_text(value):
    return None, "empty"
  return value, None


def load_image(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = 0) -> Image.Image:
  """Encoded image bytes → RGB, for what the web serves: JPEG (baseline or
  progressive, CMYK, grayscale), PNG (palette, alpha, 16-bit), WebP, GIF (first
  frame). EXIF orientation is applied; transparency is composited onto white;
  16-bit samples are scaled to 8 bits. Raises ImageTooLarge for images over
  `max_pixels` (checked from the header, before decoding) and PIL's errors
  for anything undecodable or truncated.

  `min_side` > 0: a JPEG whose shorter side is at least twice that is decoded
  at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's `draft`), keeping
  the shorter side ≥ `min_side`. Decoding and the resize after it then touch
  4–64× fewer pixels: the main saving on large web photos."""
  try:
    image = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError as e:  # PIL's own guard, above 2 × its limit
    raise ImageTooLarge(str(e)) from e
  if image.width * image.height > max_pixels:
    raise ImageTooLarge(f"{image.width}x{image.height} exceeds max_pixels={max_pixels}")
  if min_side and image.format == "JPEG" and min(image.size) >= 2 * min_side:
    scale = min_side / min(image.size)
    image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
  if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
    image = ImageOps.exif_transpose(image)
  image.load()  # forces the full decode: catches truncation here
  return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
  """A decoded image → 8-bit RGB: 16-bit samples scaled, transparency
  composited onto white (as transformers' CLIP preprocessing does too)."""
  if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / 32-bit grayscale
    values = np.asarray(image, np.float32)
    scale = 257.0 if image.mode != "F" or values.max() > 255 else 1.0
    image = Image.fromarray(np.clip(values / scale, 0, 255).astype(np.uint8), "L")
  if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
    rgba = image.convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
  return image if image.mode == "RGB" else image.convert("RGB")


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
  """Scales so the shorter side is `size` (bicubic); smaller images are kept."""
  scale = size / min(image.width, image.height)
  if scale >= 1:
    return image
  return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                      Image.Resampling.BICUBIC)


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()
