"""python -m core.data.check --dataset {mars,duke,synthetic} [--root DIR] [--decode]: JSON summary of a dataset,
or a non-zero exit with the reason when its layout is broken. Never generates: a missing synthetic tree is an error.
"""
from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from core.config import Dataset, SyntheticSize
from core.data.base import DatasetError, VideoDataset

# the synthetic preset and seed the tables use without flags (experiments/profiles.yaml, profile cpu); keep in step
# (tests/test_data_check.py checks it against the profile)
TABLE_PRESET, TABLE_SEED = "occluded", 0
PRESET_NAMES = typing.get_args(SyntheticSize)             # core.data.synthetic.PRESETS' names


def _synthetic(root: str, size: str = TABLE_PRESET, seed: int = TABLE_SEED) -> VideoDataset:
    from core.data.datasets import as_synthetic, load_mars
    from core.data.synthetic import MARKER
    if not (Path(root) / MARKER).is_file():
        raise DatasetError(f"{root}: no complete synthetic tree (missing {MARKER}); generate one with "
                           f"python -m core.data.synthetic --root {root} --size {size} --seed {seed} (or run a "
                           f"table: it generates the data it needs)")
    return as_synthetic(load_mars(root))


def _load(dataset: str, root: str, size: str, seed: int) -> VideoDataset:
    from core.data.datasets import load_duke, load_mars
    if dataset == "synthetic":
        return _synthetic(root, size, seed)
    return {"mars": load_mars, "duke": load_duke}[dataset](root)


def decode_all(ds: VideoDataset) -> int:
    """Decode every frame once (raises DatasetError naming the first bad file); returns the number decoded."""
    from core.data.clips import read_frame
    from core.progress import bar
    paths = sorted({p for split in (ds.train, ds.query, ds.gallery) for t in split for p in t.paths})
    for p in bar(paths, desc="decoding", unit="frame"):
        read_frame(p)
    return len(paths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split(":")[0])
    ap.add_argument("--dataset", required=True, choices=typing.get_args(Dataset))
    ap.add_argument("--root", help="dataset folder (synthetic default: .cache/synthetic_<size>_seed<seed>_v<version>)")
    ap.add_argument("--size", default=TABLE_PRESET, choices=PRESET_NAMES,
                    help="synthetic only, to find the default root (default: %(default)s, the tables' preset)")
    ap.add_argument("--seed", type=int, default=TABLE_SEED, help="synthetic only, to find the default root")
    ap.add_argument("--decode", action="store_true", help="also decode every frame (slow on real datasets)")
    args = ap.parse_args(argv)
    if args.dataset != "synthetic" and not args.root:
        ap.error(f"--root is required for --dataset {args.dataset}")
    from core.data.synthetic import default_root
    root = args.root or str(default_root(args.size, args.seed))
    try:
        ds = _load(args.dataset, root, args.size, args.seed)
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
