"""python -m core.data.check --dataset {mars,duke,synthetic} [--root DIR] [--decode]: JSON summary of a dataset,
or a non-zero exit with the reason when its layout is broken. Never generates: a missing synthetic tree is an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.progress import bar

from core.data.base import DatasetError, VideoDataset
from core.data.clips import read_frame
from core.data.datasets import as_synthetic, load_duke, load_mars
from core.data.synthetic import MARKER, PRESETS, default_root


def _synthetic(root: str) -> VideoDataset:
    if not (Path(root) / MARKER).is_file():
        raise DatasetError(f"{root}: no complete synthetic tree (missing {MARKER}); generate one with "
                           f"python -m core.data.synthetic --root {root}")
    return as_synthetic(load_mars(root))


LOADERS = {"mars": load_mars, "duke": load_duke, "synthetic": _synthetic}


def decode_all(ds: VideoDataset) -> int:
    """Decode every frame once (raises DatasetError naming the first bad file); returns the number decoded."""
    paths = sorted({p for split in (ds.train, ds.query, ds.gallery) for t in split for p in t.paths})
    for p in bar(paths, desc="decoding", unit="frame"):
        read_frame(p)
    return len(paths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split(":")[0])
    ap.add_argument("--dataset", required=True, choices=list(LOADERS))
    ap.add_argument("--root", help="dataset folder (synthetic default: .cache/synthetic_<size>_seed<seed>_v<version>)")
    ap.add_argument("--size", default="default", choices=list(PRESETS), help="synthetic only, to find the default root")
    ap.add_argument("--seed", type=int, default=0, help="synthetic only, to find the default root")
    ap.add_argument("--decode", action="store_true", help="also decode every frame (slow on real datasets)")
    args = ap.parse_args(argv)
    root = args.root or (str(default_root(args.size, args.seed)) if args.dataset == "synthetic" else None)
    if root is None:
        ap.error(f"--root is required for --dataset {args.dataset}")
    try:
        ds = LOADERS[args.dataset](root)
        summary = ds.summary()
        if args.decode:
            summary["decoded_frames"] = decode_all(ds)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary["root"] = str(root)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
