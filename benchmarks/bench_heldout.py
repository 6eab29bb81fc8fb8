"""Score a finished `mixq run` on photos nothing was tuned on: each variant's IR against the fp32 IR, with the
per-photo NIQE distance (`niqe_gap`) the report uses.

    python research/heldout_photos.py runs/heldout_photos
    python benchmarks/bench_heldout.py runs/demo --photos runs/heldout_photos --out runs/heldout_eval

Writes OUT/VARIANT/{per_image.csv,summary.json} (from `mixq eval`) and OUT/heldout.json; prints a Markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

METRICS = "fidelity_psnr,fidelity_ms_ssim,fidelity_gmsd,fidelity_nlpd,laplacian_ratio,niqe"


def _rows(folder: Path) -> dict[str, dict]:
    with (folder / "per_image.csv").open() as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished `mixq run` output folder with an fp32 variant")
    p.add_argument("--photos", required=True, help="folder of HR photos (LR made by MATLAB bicubic)")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    from mixq_nncf.cli import main as mixq

    run, out = Path(args.run), Path(args.out)
    variants = sorted(d.name for d in (run / "variants").iterdir() if (d / "model.xml").is_file())
    if "fp32" not in variants:
        raise SystemExit(f"{run}: no fp32 variant to compare with; run the config with its fp32 variant")
    reference = run / "variants" / "fp32" / "model.xml"
    for v in ["fp32"] + [v for v in variants if v != "fp32"]:
        code = mixq(["eval", "--model", str(run / "variants" / v / "model.xml"), "--reference", str(reference),
                     "--data", args.photos, "--metrics", METRICS, "--out", str(out / v)])
        if code:
            return code
    ref = _rows(out / "fp32")
    table = {}
    for v in variants:
        rows = _rows(out / v)
        mean = {k: sum(float(r[k]) for r in rows.values()) / len(rows) for k in METRICS.split(",")}
        mean["niqe_gap"] = sum(abs(float(rows[i]["niqe"]) - float(ref[i]["niqe"])) for i in rows) / len(rows)
        table[v] = {k: round(x, 4) for k, x in mean.items()}
    (out / "heldout.json").write_text(json.dumps({"run": str(run), "photos": args.photos, "variants": table},
                                                 indent=2) + "\n")
    cols = METRICS.split(",") + ["niqe_gap"]
    print("| variant | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for v, m in table.items():
        print(f"| {v} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
