"""Regenerate the seed corpus of tests/fuzz/fuzz_image_decode (tiny images, < 10 KB each).

    python3 tests/fuzz/make_image_corpus.py

Needs Pillow and scikit-image (for a real photograph to crop from).
"""
import io
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

OUT = Path(__file__).resolve().parent / "corpus" / "image_decode"


def save(name, img, **kw):
    buf = io.BytesIO()
    img.save(buf, **kw)
    b = buf.getvalue()
    assert len(b) < 10240, (name, len(b))
    (OUT / name).write_bytes(b)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    photo = Image.fromarray(skdata.chelsea()).resize((40, 27), Image.LANCZOS)
    rgba = photo.convert("RGBA")
    a = np.array(rgba)
    a[..., 3] = np.linspace(0, 255, a.shape[1], dtype=np.uint8)[None, :]
    rgba = Image.fromarray(a)
    save("baseline.jpg", photo, format="JPEG", quality=80)
    save("progressive.jpg", photo, format="JPEG", quality=80, progressive=True)
    save("grey.jpg", photo.convert("L"), format="JPEG", quality=80)
    save("cmyk.jpg", photo.convert("CMYK"), format="JPEG", quality=80)
    save("q444.jpg", photo, format="JPEG", quality=90, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif6.jpg", photo, format="JPEG", quality=70, exif=exif.tobytes())
    save("rgb.png", photo, format="PNG")
    save("rgba.png", rgba, format="PNG")
    save("palette.png", photo.convert("P"), format="PNG")
    save("grey.png", photo.convert("L"), format="PNG")
    save("interlaced.png", photo, format="PNG", interlace=1)
    g16 = Image.fromarray((np.array(photo.convert("L"), dtype=np.uint16) * 257))
    save("grey16.png", g16, format="PNG")
    save("trns.png", photo.convert("P"), format="PNG", transparency=0)
    save("lossy.webp", photo, format="WEBP", quality=60)
    save("lossless_alpha.webp", rgba, format="WEBP", lossless=True)
    frames = [photo, photo.transpose(Image.FLIP_LEFT_RIGHT)]
    save("anim.webp", frames[0], format="WEBP", save_all=True, append_images=frames[1:],
         duration=100)
    save("anim.gif", frames[0].convert("P"), format="GIF", save_all=True,
         append_images=[f.convert("P") for f in frames[1:]], duration=100, loop=0)
    save("interlaced.gif", photo.convert("P"), format="GIF", interlace=True)
    pim = photo.convert("P")
    save("transparent.gif", pim, format="GIF", optimize=False, transparency=pim.getpixel((0, 0)))


if __name__ == "__main__":
    main()
