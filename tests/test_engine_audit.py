"""core.engine.audit (issue 14): the collector on a tiny model, the untrained model, the audit end to end on a tiny
synthetic tree with a hand-written truth.parquet, and its MLflow logging and report section."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch

from core import record, tables, tracking
from core.reporting import report as reporting
from core.reporting.audit import audit_reading
from core.data import load_dataset, make_test_loader
from core.data.normalize import normalize_clips
from core.data.sampling import eval_frames
from core.data.synthetic import generate
from core.data.truth import TRUTH_COLUMNS
from core.engine import audit, extract_features, run
from core.engine.device import seed_everything
from core.models import build_model
from core.models.model import VideoReIDModel
from core.specs import load_spec, read_spec, spec_path
from tests.helpers import FakeEpoch, FakeResult, fake_per_query, tiny_cfg


def _model(aggregation="sta"):
    torch.manual_seed(0)
    return VideoReIDModel(3, backbone="resnet18", pretrained=False, aggregation=aggregation, num_regions=2,
                          feat_dim=8).eval()


def test_the_collector_keeps_every_clips_scores_and_the_chosen_maps(tiny_dataset):
    tracks = tiny_dataset.query[:2]
    model = _model()
    collector = audit.ClipCollector(keep_maps={1})
    extract_features(model, tracks, seq_len=3, sampling="dense", height=32, width=16, batch_size=3, num_workers=0,
                     device=torch.device("cpu"), progress=False, collect=collector)
    loader = make_test_loader(tracks, 3, "dense", 32, 16, batch_size=3, num_workers=0)
    with torch.no_grad():
        outs = [model(normalize_clips(clips)) for clips, _ in loader]
    scores = torch.cat([o["scores"] for o in outs])                      # (C, N, K)
    maps = torch.cat([o["attention"] for o in outs])                     # (C, N, h, w)
    owners = [o for o, t in enumerate(tracks) for _ in eval_frames(len(t.paths), 3, "dense")]
    assert collector.owners == owners
    assert collector.clips == [i for o, t in enumerate(tracks) for i in range(len(eval_frames(len(t), 3, "dense")))]
    assert np.allclose(collector.score_array(), scores.numpy(), atol=1e-6)
    assert sorted(collector.maps) == [i for i, o in enumerate(owners) if o == 1]
    assert all(torch.allclose(collector.maps[i], maps[i], atol=1e-6) for i in collector.maps)
    empty = audit.ClipCollector(keep_maps={0})
    extract_features(_model("avg"), tracks, seq_len=2, sampling="evenly", height=32, width=16, batch_size=3,
                     num_workers=0, device=torch.device("cpu"), progress=False, collect=empty)
    assert empty.owners == [] and empty.score_array().size == 0


def test_the_untrained_model_is_trainings_start_and_leaves_the_generators_alone(tiny_synthetic_root):
    cfg = tiny_cfg(tiny_synthetic_root)
    seed_everything(cfg.train.seed)
    start = build_model(cfg.model, 5).state_dict()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model = audit.untrained_model(cfg, 5, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), before) and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in start.items())


def _write_truth(root) -> None:
    """Every odd frame of every test tracklet gets a band over the top half of the frame (all columns)."""
    names = (root / "info" / "test_name.txt").read_text().split()
    tracks = scipy.io.loadmat(root / "info" / "tracks_test_info.mat")["track_test_info"]
    rows = []
    for t, (first, last, _, _) in enumerate(tracks):
        for f in range(last - first + 1):
            base = dict(split="test", name=names[first - 1 + f], track=t, frame=f, height=64, width=32, blur=0.0,
                        dx=0.0, dy=0.0, scale=0.9, junk=False)
            band = dict(kind="band", y0=0, y1=32, x0=0, x1=32) if f % 2 else dict(kind="none", y0=0, y1=0, x0=0, x1=0)
            rows.append({**base, **band})
    pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).to_parquet(root / "truth.parquet")


def test_audit_metrics_reach_the_run_result(tmp_path):
    root = generate(tmp_path / "tree", "tiny", seed=0, progress=False)    # frames 64 x 32 (tests rely on it)
    _write_truth(root)
    cfg = tiny_cfg(root, **{"train.epochs": 1})
    result = run(cfg, tmp_path / "runs", progress=False)
    m = result.metrics
    for name in ("attn_dev_uniform", "attn_entropy", "attn_auc_region", "attn_auc_region_ci_low", "attn_auc_map",
                 "attn_auc_region_untrained", "attn_auc_map_untrained_ci_high", "attn_auc_region_gain_ci_low",
                 "attn_dev_uniform_untrained", "attn_entropy_audited"):
        assert name in m and np.isfinite(m[name]), name
    assert 0.0 <= m["attn_auc_region_ci_low"] <= m["attn_auc_region"] <= m["attn_auc_region_ci_high"] <= 1.0
    assert "attn_auc_region_k2" not in m          # the bottom region is never damaged: no pairs, not logged
    # hand count: the band is region 1 (grid row 0 of 2) and cell (0, 0) of the 2 x 1 grid; per clip, clean (even)
    # x occluded (odd) frames of region 1, and one cell pair per odd frame
    from core.engine.run import _union
    ds = load_dataset(cfg.data, False)
    pairs_region = pairs_map = 0
    for t in _union(ds.query, ds.gallery)[0]:
        for frames in eval_frames(len(t), cfg.eval.seq_len, cfg.eval.sampling):
            odd = int(sum(int(f) % 2 for f in frames))
            pairs_region += odd * (len(frames) - odd)
            pairs_map += odd
    assert (m["attn_pairs_region"], m["attn_pairs_map"]) == (pairs_region, pairs_map)
    clip = result.audit_clips[0]
    assert 1 <= len(result.audit_clips) <= audit.FIGURE_CLIPS and clip["edges"] == [0.0, 0.5, 1.0]
    assert [bool(d) for d in clip["damage"]] == [int(p[-7:-4]) % 2 == 0 for p in clip["frames"]]  # F001: frame 0


def test_audit_is_logged_and_reported(tmp_path):
    tracking.configure(f"sqlite:///{tmp_path}/mlflow.db")
    spec = load_spec(spec_path("table1"), "cpu")
    row = spec.rows[-1]
    clips = [{"label": "tracklet 3", "query": 3, "pid": 10, "camid": 1, "frames": ["missing.jpg"] * 2,
              "scores": [[0.6, 0.5], [0.4, 0.5]], "damage": [[], [[0, 32, 0, 32]]], "frame_size": [64, 32],
              "edges": [0.0, 0.5, 1.0]}]
    metrics = {"R1": 0.5, "R5": 0.6, "R10": 0.7, "R20": 0.8, "mAP": 0.4, "attn_dev_uniform": 0.0125,
               "attn_entropy": 0.9975, "attn_auc_region": 0.625, "attn_auc_region_ci_low": 0.5,
               "attn_auc_region_ci_high": 0.75, "attn_auc_region_untrained": 0.5, "attn_auc_region_k1": 0.625,
               "attn_pairs_region": 40.0, "attn_pairs_map": 12.0}
    with tracking.parent_run(tracking.experiment_name("table1"), "test", {"table": "table1"}):
        tags = {"table": "table1", "row": row.label, "dataset": "synthetic", "profile": "cpu", "seed": 0}
        with tracking.child_run("sta", tags):
            tracking.log_config(row.config)
            result = FakeResult(metrics, np.linspace(0.5, 1, 20), [FakeEpoch(0)], {}, {}, fake_per_query(metrics))
            tracking.log_result(result)
            shown = types.SimpleNamespace(cmc=result.cmc, scores={}, audit_clips=clips)
            tables._log_figures(tables.Job(row, 0, row.config), shown, types.SimpleNamespace(query=[]))
    runs = tracking.runs_frame("STA table1")
    assert runs["metrics.attn_auc_region"].iloc[0] == 0.625                 # an AUC, logged as a fraction
    assert tracking.load_json(runs["run_id"].iloc[0], record.AUDIT_CLIPS)["clips"] == clips
    text = reporting.write_report(read_spec(spec_path("table1")), runs, tmp_path, load_json=tracking.load_json,
                                  load_table=tracking.load_table).read_text()
    assert "### Attention audit" in text and "0.5 = no preference" in text and "eval.audit_occluded = 0.5" in text
    section = text[text.index("### Attention audit"):]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {row.label}"))
    assert "0.0125" in line and "0.9975" in line and "0.625 [0.500, 0.750]" in line and "k1 0.62" in line
    assert "40/12" in line and "AUC scores (synthetic truth)" in text
    # the reading follows the intervals: scores [0.5, 0.75] touch 0.5 (no preference), no gain or map interval
    assert f"- **{row.label} (synthetic, MARS layout)**: Eq. 4 scores: no preference detectable at 95 % " \
           "(AUC interval around 0.5)." in section
    assert (tmp_path / "figures" / "table1_cpu_synthetic_attention_audit.png").stat().st_size > 1000


def test_audit_reading_follows_the_intervals():
    one = {"metrics.attn_auc_region": 0.6, "metrics.attn_auc_region_ci_low": 0.55,
           "metrics.attn_auc_region_ci_high": 0.65,
           "metrics.attn_auc_region_gain": -0.1, "metrics.attn_auc_region_gain_ci_low": -0.2,
           "metrics.attn_auc_region_gain_ci_high": -0.01, "metrics.attn_auc_map": 0.4,
           "metrics.attn_auc_map_ci_low": 0.3, "metrics.attn_auc_map_ci_high": 0.45}
    text = audit_reading("STA", pd.DataFrame([one]))
    assert text == ("- **STA**: Eq. 4 scores: clean preferred over occluded (AUC interval above 0.5), less than "
                    "untrained (gain interval below 0); Eq. 1 map: occluded preferred over clean (AUC interval below "
                    "0.5).")
    assert audit_reading("STA", pd.DataFrame([one, one])) is None        # two seeds: no single interval
    assert audit_reading("STA", pd.DataFrame([{"metrics.attn_dev_uniform": 0.01}])) is None


@pytest.mark.parametrize("value", [0.0, 1.5])
def test_the_occlusion_threshold_must_be_a_fraction(value):
    from core.config import ConfigError, RunConfig, apply_overrides
    with pytest.raises(ConfigError, match="eval.audit_occluded"):
        apply_overrides(RunConfig(), {"eval.audit_occluded": value})


def test_sta_rows_that_differ_in_the_head_share_one_untrained_pass(tiny_synthetic_root, tiny_dataset, monkeypatch):
    # the backbone is drawn first from the seed, so fusion, feat_dim and the losses leave it (and Eq. 1-4) unchanged
    a = tiny_cfg(tiny_synthetic_root, **{"model.fusion": False, "loss.reg_weight": 0.0})
    b = tiny_cfg(tiny_synthetic_root, **{"model.fusion": True, "model.feat_dim": 16})
    cpu = torch.device("cpu")
    ba, bb = (audit.untrained_model(c, 5, cpu).backbone.state_dict() for c in (a, b))
    assert all(torch.equal(v, bb[k]) for k, v in ba.items())
    calls = []
    real = audit.extract_features
    monkeypatch.setattr(audit, "extract_features", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    monkeypatch.setattr(audit, "_UNTRAINED", {})
    keys = [(0, 0), (2, 0)]
    first = audit._untrained_outputs(a, 5, cpu, tiny_dataset.query, keys, False)
    second = audit._untrained_outputs(b, 5, cpu, tiny_dataset.query, keys, False)
    assert len(calls) == 1 and first[0].shape == (2, a.eval.seq_len, 2) and second is first


def test_a_truth_table_without_a_test_frame_is_refused_by_name():
    from core.data.base import DatasetError
    from core.data.truth import TRUTH_COLUMNS as cols
    table = pd.DataFrame([dict(split="test", name="a.jpg", track=0, frame=0, kind="none", y0=0, y1=0, x0=0, x1=0,
                               height=4, width=4, blur=0.0, dx=0.0, dy=0.0, scale=0.9, junk=False)], columns=list(cols))
    regions, cells = audit.frame_fractions(table, ["a.jpg"], 2, 1, 2, "last")
    assert regions.tolist() == [[0.0, 0.0]] and cells.shape == (1, 2, 1)
    with pytest.raises(DatasetError, match="truth.parquet: no row for 1 test frames \\(first: b.jpg\\)"):
        audit.frame_fractions(table, ["a.jpg", "b.jpg"], 2, 1, 2, "last")
