"""Write centre crops of installed photos that the demo never trains, calibrates or evaluates on, for checking
quality figures on photos nothing was tuned on.

    python research/heldout_photos.py runs/heldout_photos
    python research/range_init.py --eval runs/heldout_photos runs/demo/variants/ptq_int8/quantized.pt ...

The photos: pyiqa's four test photos (one SPAQ phone photo, three video frames; `tests/test_efficiency_img_dir` in
site-packages) and scikit-image's gravel, brick, grass (grey, written as RGB) and hubble_deep_field, each cropped
to 512x384 (landscape) or 384x512 (portrait) around its centre, the size of the Kodak eval photos.
"""
from __future__ import annotations

import argparse
import site
import sys
from pathlib import Path

SKIMAGE = ("gravel.png", "brick.png", "grass.png", "hubble_deep_field.jpg")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder the PNG crops are written to")
    args = p.parse_args(argv)
    from PIL import Image

    roots = [Path(s) for s in site.getsitepackages()]
    found = []
    for root in roots:
        found += sorted((root / "tests" / "test_efficiency_img_dir").glob("*.jpg"))
        found += [root / "skimage" / "data" / n for n in SKIMAGE if (root / "skimage" / "data" / n).is_file()]
    if len(found) < len(SKIMAGE) + 4:
        sys.exit(f"found {len(found)} of the 8 photos under {', '.join(map(str, roots))}; install the project "
                 "(make setup) so pyiqa's and scikit-image's files are present")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in found:
        im = Image.open(path).convert("RGB")
        w, h = im.size
        cw, ch = (min(w, 512), min(h, 384)) if w >= h else (min(w, 384), min(h, 512))
        left, top = (w - cw) // 2, (h - ch) // 2
        im.crop((left, top, left + cw, top + ch)).save(out / f"{path.stem}.png")
        print(f"{out / path.stem}.png  {cw}x{ch}  from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
