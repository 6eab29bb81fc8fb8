"""Write the embedded held-out photos (`data.heldout: "offline"`, mixq_nncf.data.datasets) as centre crops, for
research scripts that take a folder of images.

    python research/heldout_photos.py runs/heldout_photos
    python research/range_init.py --eval runs/heldout_photos runs/demo/variants/ptq_int8/quantized.pt ...

Each photo is cropped to 512x384 (landscape) or 384x512 (portrait) around its centre, the size of the Kodak eval
photos. `mixq run` scores the same photos itself where a config sets `data.heldout` (the demo: 384 px square crops).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixq_nncf.data.datasets import offline_photos
from mixq_nncf.errors import DataError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder the PNG crops are written to")
    args = p.parse_args(argv)
    from PIL import Image

    try:
        found = offline_photos("heldout")
    except DataError as exc:
        sys.exit(str(exc))
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
