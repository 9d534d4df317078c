"""python -m core.bench eval: fast evaluation and re-ranking vs their references, MARS-sized.

Input: identity-structured features (identity centre + camera offset + noise), 1,980 queries
and 9,330 gallery tracklets by default, 6 cameras, distractors (pid 0) and junk (pid -1),
and a few identities seen by one camera only (their queries have no valid match).

1. CMC/mAP: ``evaluate`` (distance matrix included in its time) vs ``evaluate_reference``
   (per-query loop, given the same distance matrix), both AP rules; results must agree.
2. Re-ranking: ``k_reciprocal_rerank`` vs ``k_reciprocal_rerank_reference`` (the authors'
   release step by step, dense numpy) twice: with a stable argsort ("reference", ties by
   index as the fast path: must agree within 1e-5) and with the release's own quicksort
   ("release", the timing baseline; exact distance ties, which MARS-sized float32 data does
   contain, are then ordered arbitrarily). Each runs in a fresh child process on the same
   features, distances included: "cold" is the first call of that process, as a table run
   makes it (nothing warmed up), "warm" a second call; wall time and peak RSS growth (Linux
   VmHWM after the call minus VmRSS before it, the peak reset through /proc/self/clear_refs).
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
from queue import Empty
import tempfile
import time

import numpy as np
import torch

from core.evaluation import (evaluate, evaluate_reference, k_reciprocal_rerank, k_reciprocal_rerank_reference,
                             pairwise_distance, self_euclidean)

RERANKERS = {"fast": k_reciprocal_rerank, "reference": k_reciprocal_rerank_reference,
             "release": functools.partial(k_reciprocal_rerank_reference, sort_kind="quicksort")}
RERANK_NOTES = {"fast": "core.evaluation.k_reciprocal_rerank",
                "reference": "release steps, stable argsort: the exactness check",
                "release": "release steps as published, quicksort argsort: the timing baseline"}


def make_problem(num_q: int, num_g: int, dim: int, seed: int = 0) -> dict:
    """Synthetic MARS-like features and labels: {q_feats [m, d], g_feats [n, d], q_pids, g_pids, q_camids, g_camids}."""
    rng = np.random.default_rng(seed)
    num_ids = max(2, num_q // 3)                         # MARS: ~3 query tracklets per test identity
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = rng.integers(1, num_ids + 1, num_g)
    kind = rng.random(num_g)
    g_pids[kind < 0.10] = 0                              # distractors
    g_pids[kind > 0.98] = -1                             # junk
    q_cams, g_cams = rng.integers(1, 7, num_q), rng.integers(1, 7, num_g)
    one_cam = np.arange(1, num_ids + 1)[rng.random(num_ids) < 0.03]   # seen by camera 1 only
    q_cams[np.isin(q_pids, one_cam)] = 1
    g_cams[np.isin(g_pids, one_cam)] = 1
    centres = 0.37 * rng.standard_normal((num_ids + 1, dim))   # scales: rank-1 ~0.86 at MARS size, like STA
    cam_offset = 0.12 * rng.standard_normal((7, dim))

    def feats(pids, cams):
        own = 0.37 * rng.standard_normal((len(pids), dim))  # pid 0 / -1: a centre of their own
        base = np.where((pids > 0)[:, None], centres[np.maximum(pids, 0)], own)
        return (base + cam_offset[cams] + 1.0 * rng.standard_normal((len(pids), dim))).astype(np.float32)

    return {"q_feats": feats(q_pids, q_cams), "g_feats": feats(g_pids, g_cams), "q_pids": q_pids,
            "g_pids": g_pids, "q_camids": q_cams, "g_camids": g_cams}


def _labels(p: dict) -> tuple:
    return p["q_pids"], p["g_pids"], p["q_camids"], p["g_camids"]


def bench_evaluate(p: dict) -> bool:
    ok = True
    for ap_rule in ("trapezoid", "step"):
        t0 = time.perf_counter()
        dist = pairwise_distance(p["q_feats"], p["g_feats"])
        t_dist = time.perf_counter() - t0
        fast = evaluate(dist, *_labels(p), ap_rule=ap_rule)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = evaluate_reference(dist.cpu().numpy(), *_labels(p), ap_rule=ap_rule)
        t_ref = time.perf_counter() - t0
        same = (np.array_equal(fast["cmc"], ref["cmc"]) and fast["num_valid"] == ref["num_valid"]
                and np.allclose(fast["AP"], ref["AP"], atol=1e-12, rtol=0, equal_nan=True))
        ok &= same
        print(f"evaluate [{ap_rule}]: fast {t_fast:.3f} s (distances {t_dist:.3f} s + metrics "
              f"{t_fast - t_dist:.3f} s) | reference loop {t_ref:.3f} s | ratio {t_ref / t_fast:.1f}x "
              f"(metrics only {t_ref / (t_fast - t_dist):.1f}x)")
        print(f"  R1 {fast['R1']:.4f} R5 {fast['R5']:.4f} R10 {fast['R10']:.4f} R20 {fast['R20']:.4f} "
              f"mAP {fast['mAP']:.6f} (reference {ref['mAP']:.6f}, |diff| {abs(fast['mAP'] - ref['mAP']):.1e}) "
              f"valid {fast['num_valid']} skipped {fast['num_skipped']} -> {'identical' if same else 'MISMATCH'}")
    return ok


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Current RSS in kB, after resetting the VmHWM peak to it (Linux /proc/self/clear_refs)."""
    rss0 = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return rss0


def _child(name: str, q, g, k: tuple, threads: int, out_path: str, queue, warm: bool) -> None:
    """Run one re-ranker in this fresh process: first "cold", the first call of the process as a table run makes
    it (nothing warmed up before it), then, with warm=True, "warm": a second call on the same input.

    Reports (cold wall s, cold CPU s, cold peak RSS growth in bytes, warm wall s, warm CPU s, warm peak bytes,
    wall s of the all-pairs distance step alone, measured after the calls). CPU seconds stay meaningful on a
    shared, loaded machine.
    """
    torch.set_num_threads(threads)
    fn = RERANKERS[name]
    runs = []
    for _ in range(2 if warm else 1):
        rss0 = _reset_peak_rss()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(q, g, *k)
        runs += [time.perf_counter() - t0, time.process_time() - c0, (_status_kb("VmHWM") - rss0) * 1024]
        if len(runs) == 3:
            np.save(out_path, out)
        elif not np.array_equal(out, np.load(out_path)):
            raise AssertionError(f"re-ranker {name}: the second call's output differs from the first's")
    runs += [float("nan")] * (6 - len(runs))
    t0 = time.perf_counter()
    self_euclidean(np.concatenate([q, g]))               # the shared distance step alone, for the split
    queue.put((*runs, time.perf_counter() - t0))


def run_child(name: str, q, g, k: tuple, threads: int, out_path: str, warm: bool = True) -> tuple:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, q, g, k, threads, out_path, queue, warm))
    proc.start()
    while True:                                         # a child that dies (an exception) never puts a result
        try:
            result = queue.get(timeout=1.0)
            break
        except Empty:
            if not proc.is_alive():
                raise RuntimeError(f"re-ranker {name}: its process ended with exit code {proc.exitcode} "
                                   "before reporting (its traceback is above)") from None
    proc.join()
    return result


def bench_rerank(p: dict, k: tuple, skip_reference: bool, threads: int) -> bool:
    """Each re-ranker in its own fresh process: cold (first call) and warm (second call) side by side.

    "fast" and "release" are timed cold and warm; "reference" (the exactness check) runs once."""
    names = ("fast",) if skip_reference else ("fast", "reference", "release")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in names:
            path = os.path.join(tmp, name + ".npy")
            cold, c_cpu, c_peak, warm, w_cpu, w_peak, t_dist = run_child(
                name, p["q_feats"], p["g_feats"], k, threads, path, warm=name != "reference")
            runs[name] = {"cold": cold, "warm": warm, "cpu": c_cpu, "peak": c_peak, "out": np.load(path)}
            warm_text = f"warm {warm:6.2f} s ({w_cpu:6.2f} s CPU)" if name != "reference" else "warm   not run"
            print(f"rerank {name:9s}: cold {cold:6.2f} s wall ({c_cpu:6.2f} s CPU), {warm_text}; peak RSS "
                  f"growth {c_peak / 2**30:.2f} GiB; its all-pairs distance step alone {t_dist:.2f} s  "
                  f"[{RERANK_NOTES[name]}]")
        fast = runs["fast"]
        base = evaluate(pairwise_distance(p["q_feats"], p["g_feats"]), *_labels(p))
        res = evaluate(fast["out"], *_labels(p))
        print(f"  without re-ranking: R1 {base['R1']:.4f} mAP {base['mAP']:.4f}; "
              f"with (fast): R1 {res['R1']:.4f} mAP {res['mAP']:.4f}")
        for name in names[1:]:
            ref = runs[name]
            diff = float(np.abs(fast["out"] - ref["out"]).max())
            res_ref = evaluate(ref["out"], *_labels(p))
            verdict = "ok" if diff < 1e-5 else ("ABOVE 1e-5" if name == "reference" else "ties ordered differently")
            speed = f"cold {ref['cold'] / fast['cold']:.1f}x faster"
            if name == "release":
                speed += f", warm {ref['warm'] / fast['warm']:.1f}x"
            print(f"  fast vs {name}: {speed} in wall time ({ref['cpu'] / fast['cpu']:.1f}x in CPU time, cold), "
                  f"{ref['peak'] / max(fast['peak'], 1):.1f}x less peak memory; max |diff| = {diff:.2e} ({verdict}); "
                  f"{name}: R1 {res_ref['R1']:.4f} mAP {res_ref['mAP']:.4f}")
            if name == "reference":
                ok = diff < 1e-5
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.bench eval", description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=1980)
    ap.add_argument("--gallery", type=int, default=9330)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--lambda-value", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    ap.add_argument("--skip-reference-rerank", action="store_true", help="time only the fast re-ranking")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"eval bench: {args.queries} queries x {args.gallery} gallery, dim {args.dim}; re-ranking on {device}; "
          f"torch threads {args.threads}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    p = make_problem(args.queries, args.gallery, args.dim, args.seed)
    ok = bench_evaluate(p)
    ok &= bench_rerank(p, (args.k1, args.k2, args.lambda_value), args.skip_reference_rerank, args.threads)
    print(f"load average at the end {os.getloadavg()[0]:.1f}; " + ("all checks passed" if ok else "CHECK FAILED"))
    return 0 if ok else 1
