"""What every HTML page of the project shares: one style, escaping, inline
images (base64) and number formats, so each page is one file that opens
offline."""

from __future__ import annotations

import base64
import datetime
import html
import io

import numpy as np
from PIL import Image

PANEL = 192  # Gallery panels wider than this are downscaled to it.

STYLE = """
body{font:14px/1.4 sans-serif;margin:16px 24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:24px 0 6px;
border-bottom:1px solid #ccc}h3{font-size:15px;margin:14px 0 4px}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #ccc;
padding:2px 8px}td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f2f2f2}.muted{color:#666}.plot{max-width:100%}
.item{margin:8px 0 14px}.panels{display:flex;gap:4px;flex-wrap:wrap}
.panels figure{margin:0;text-align:center;font-size:12px}
.panels img{width:150px;image-rendering:pixelated}
.bad{color:#b00000;font-weight:bold}.ok{color:#006000}
pre{background:#f7f7f7;padding:8px;font-size:12px;max-height:400px;overflow:auto}
"""


def esc(value) -> str:
  """HTML-escaped text of `value`, quotes included."""
  return html.escape(str(value), quote=True)


def document(title: str, body: list[str]) -> str:
  """A whole page: the shared style inline, no script, nothing fetched."""
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n'
          + '\n'.join(body) + '\n</body></html>\n')


def data_uri(data: bytes, mime: str) -> str:
  return f'data:{mime};base64,' + base64.b64encode(data).decode('ascii')


def jpeg(rgb: np.ndarray | Image.Image, size: int | None = PANEL) -> str:
  """An inline JPEG of an RGB array or image, downscaled to `size` pixels
  (an image in place: no full-size copy of a large heat map)."""
  image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
  if size and max(image.size) > size:
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
  buf = io.BytesIO()
  image.save(buf, format='JPEG', quality=88)
  return data_uri(buf.getvalue(), 'image/jpeg')


def img(src: str, alt: str, cls: str = '') -> str:
  return f'<img src="{esc(src)}" alt="{esc(alt)}"' + (
      f' class="{cls}">' if cls else '>')


def fmt(value, digits: int = 4) -> str:
  return f'{value:.{digits}f}' if np.isfinite(value) else 'n/a'


def now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec='seconds')
