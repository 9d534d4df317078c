"""Matplotlib figures (Agg backend) for the reports and run artifacts: paper-vs-run bars and lines, CMC curves,
the N x K attention scores drawn over the frames of query clips, and the claims' forest plot. Plain functions;
each returns a Figure."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Stat = tuple[float, float]   # (mean, std) in percent; nan when missing


def close(fig) -> None:
    plt.close(fig)


def save(fig, path: str | Path) -> Path:
    from core.engine.checkpoint import atomic_write  # lazy: keeps this module free of torch
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=110,
                                             bbox_inches="tight"))
    plt.close(fig)
    return path


def bars_figure(labels: Sequence[str], metrics: Sequence[str], paper: Mapping[str, Sequence[float]],
                ours: Mapping[str, Sequence[Stat]], paper_name: str, ours_name: str, title: str):
    """Grouped bars per row, one panel per metric: the paper's value beside this run's mean (± std)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    x = np.arange(len(labels))
    for ax, m in zip(axes[0], metrics):
        mean = np.array([s[0] for s in ours[m]], dtype=float)
        std = np.array([s[1] for s in ours[m]], dtype=float)
        ax.bar(x - 0.2, np.array(paper[m], dtype=float), 0.4, label=paper_name, color="#9db4d0")
        ax.bar(x + 0.2, mean, 0.4, yerr=np.nan_to_num(std), label=ours_name, color="#d9834a", capsize=2)
        ax.set_title(m)
        ax.set_xticks(x, [_short(lb) for lb in labels], rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("%")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def lines_figure(xs: Sequence[float], x_name: str, metrics: Sequence[str], paper: Mapping[str, Sequence[float]],
                 ours: Mapping[str, Sequence[Stat]], paper_name: str, ours_name: str, title: str):
    """One panel per metric over x (Table 2's N, Table 3's K): paper dashed, this run solid (± std)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        mean = np.array([s[0] for s in ours[m]], dtype=float)
        std = np.nan_to_num(np.array([s[1] for s in ours[m]], dtype=float))
        ax.plot(xs, paper[m], "o--", label=paper_name, color="#4a6f9d")
        ax.errorbar(xs, mean, yerr=std, fmt="s-", label=ours_name, color="#d9834a", capsize=2)
        ax.set_title(m)
        ax.set_xlabel(x_name)
        ax.set_xticks(list(xs))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("%")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def cmc_figure(curves: Mapping[str, Sequence[float]], title: str):
    """CMC curves (rank 1..R, percent), one line per label."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, cmc in curves.items():
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker=".", label=_short(label, 40))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xticks([1, 5, 10, 15, 20])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def forest_figure(labels: Sequence[str], paper: Sequence[float], ours: Sequence[tuple[float, float, float]],
                  paper_name: str, ours_name: str, title: str):
    """A forest plot, one line per claim and metric (top to bottom in `labels` order): the paper's gain as a
    diamond, this run's gain (value, low, high; percentage points) as a square with its 95 % interval, a vertical
    line at 0. NaN: nothing drawn (a row not run); NaN bounds: the square without a bar (no interval)."""
    n = len(labels)
    y = np.arange(n)[::-1]
    value, low, high = (np.array([o[i] for o in ours], dtype=float) for i in range(3))
    err = np.nan_to_num(np.vstack([value - low, high - value]))             # [2, n] left / right arm
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.3 * n))
    ax.axvline(0, color="black", lw=0.8)
    ax.errorbar(value, y, xerr=err, fmt="s", color="#d9834a", capsize=3, label=f"{ours_name}, 95 % interval")
    ax.plot(np.array(paper, dtype=float), y, "D", color="#4a6f9d", label=paper_name)
    ax.set_yticks(y, list(labels), fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("gain of the claimed row (percentage points)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / (1.6 + 0.3 * n), 1, 1))          # the legend below the axes, never on a row
    return fig


def attention_clips(scores: Mapping[int, object], query: Sequence, seq_len: int, sampling: str,
                    limit: int = 4) -> list[dict]:
    """JSON-able clips for attention_figure: the (N, K) scores of the first `limit` query clips with scores,
    the paths of the N frames the test loader fed the model, the identity and camera."""
    from core.data.sampling import eval_frames  # the test loader's own frame choice [A12]
    clips = []
    for qi in sorted(scores)[:limit]:
        t = query[qi]
        frames = eval_frames(len(t.paths), seq_len, sampling)[0]   # the first clip: the one scored
        clips.append({"query": int(qi), "pid": int(t.pid), "camid": int(t.camid),
                      "frames": [t.paths[i] for i in frames],
                      "scores": np.asarray(scores[qi], dtype=float).round(5).tolist()})
    return clips


def attention_figure(clips: Sequence[Mapping], title: str, size: tuple[int, int] = (128, 64)):
    """Each clip a row of its N frames; each frame split into K horizontal bands shaded by its score s_{n,k}
    (Eq. 4: each region's scores sum to 1 over the N frames, so 1/N is "no preference"): red above 1/N, blue
    below, the value printed. Missing frame files are drawn grey.

    Optional keys of a clip (the attention audit's clips, core.engine.audit): "edges", the K + 1 region edges as
    fractions of the frame height (default: K equal bands); "damage", per frame the true damaged rectangles
    [y0, y1, x0, x1] in pixels of the stored frame of size "frame_size" [H, W], outlined in green; "label", the
    row's title (default: the query, identity and camera)."""
    from matplotlib.colors import TwoSlopeNorm
    n_max = max(len(c["scores"]) for c in clips)
    fig, axes = plt.subplots(len(clips), n_max, figsize=(1.35 * n_max, 2.5 * len(clips)), squeeze=False)
    cmap = plt.get_cmap("coolwarm")
    for r, clip in enumerate(clips):
        s = np.asarray(clip["scores"], dtype=float)               # (N, K)
        even = 1.0 / len(s)
        spread = max(float(np.abs(s - even).max()), 0.02)
        norm = TwoSlopeNorm(vcenter=even, vmin=max(even - spread, 0.0) - 1e-9, vmax=even + spread)
        for n in range(n_max):
            ax = axes[r][n]
            ax.axis("off")
            if n >= len(s):
                continue
            img = _load_frame(clip["frames"][n] if n < len(clip.get("frames", [])) else None, size)
            h = img.shape[0]
            ax.imshow(img)
            edges = h * np.asarray(clip["edges"], dtype=float) if "edges" in clip \
                else np.linspace(0, h, s.shape[1] + 1)
            for k, score in enumerate(s[n]):
                ax.axhspan(edges[k], edges[k + 1], color=cmap(norm(float(score))), alpha=0.5, lw=0)
                ax.text(2, (edges[k] + edges[k + 1]) / 2, f"{score:.2f}", color="white", fontsize=6,
                        va="center", bbox={"facecolor": "black", "alpha": 0.4, "pad": 0.5, "lw": 0})
            if clip.get("damage"):
                _outline(ax, clip["damage"][n], clip["frame_size"], img.shape[:2])
            head = clip.get("label") or f"query {clip['query']}"
            ax.set_title(f"frame {n + 1}" if n else f"{head} (id {clip['pid']}, cam {clip['camid']})",
                         fontsize=6, loc="left")
    damage = "; green outline: the truly damaged pixels" if any(c.get("damage") for c in clips) else ""
    fig.suptitle(title + "\nred: region score above 1/N (the frame is preferred for that region), blue: below"
                 + damage, fontsize=8)
    fig.tight_layout()
    return fig


def _outline(ax, rects: Sequence[Sequence[int]], frame_size: Sequence[int], shown: tuple[int, int]) -> None:
    """Green outlines of damaged rectangles [y0, y1, x0, x1] (pixels of a frame_size [H, W] frame) on a frame drawn
    at `shown` (h, w) pixels."""
    from matplotlib.patches import Rectangle
    sy, sx = shown[0] / frame_size[0], shown[1] / frame_size[1]
    for y0, y1, x0, x1 in rects:
        ax.add_patch(Rectangle((x0 * sx - 0.5, y0 * sy - 0.5), (x1 - x0) * sx, (y1 - y0) * sy, fill=False,
                               edgecolor="#00d000", lw=1.2))


def _load_frame(path: str | None, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    if path and Path(path).is_file():
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size[1], size[0])))
    return np.full((size[0], size[1], 3), 160, dtype=np.uint8)


def _short(label: str, width: int = 22) -> str:
    """'Baseline + TL + STA + Fusion + Reg' -> '+ Reg' style short labels for crowded axes."""
    if len(label) <= width:
        return label
    return "… " + label[-(width - 2):]
