"""The pretraining stage as the pipelines run it (tables, tuning, reproduce/pretrain.py): cached or trained once,
logged as an MLflow run of its own (record.PRETRAIN_EXPERIMENT), and named by every row run that starts from it
(tags pretrain_hash, pretrain_run)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from core import tracking
from core.config import RunConfig, to_flat_dict, uses_pretraining
from core.engine import pretrain
from core.engine.pretrained import stage_config, stage_hash


@dataclass(frozen=True)
class StageRun:
    stage: pretrain.Stage
    run_id: str

    def tags(self) -> dict[str, str]:
        """What a row run that starts from this stage records about it."""
        return {"pretrain_hash": self.stage.hash, "pretrain_run": self.run_id,
                "pretrain_weights": str(self.stage.path)}


def ensure_logged(cfg: RunConfig, progress: bool = True) -> StageRun:
    """The stage of `cfg`, from the cache or trained now, with its run in the active tracking store (logged now
    when the store has none: a cached stage is logged from its pretrain.json). Call outside any active run."""
    key = stage_hash(cfg)
    cached = pretrain.cached(cfg)
    run_id = tracking.find_stage_run(key)
    if cached is not None and run_id is not None:
        return StageRun(cached, run_id)
    if cached is None:
        p = cfg.pretrain
        print(f"pretraining stage {key} (one-time, then cached in {pretrain.stage_dir(cfg)}): Avg + "
              f"{'CE + TL' if p.triplet else 'CE'} on {p.identities} synthetic identities of their own, {p.epochs} "
              f"epochs", flush=True)
    with tracking.stage_run(key, {"pretrain_weights": str(pretrain.stage_dir(cfg))}) as run_id:
        tracking.log_params({**to_flat_dict(stage_config(cfg)),
                             **{f"pretrain.{k}": v for k, v in vars(cfg.pretrain).items()}})
        callback = tracking.epoch_callback()
        stage = pretrain.ensure(cfg, callbacks=[callback], progress=progress)
        for row in stage.record.get("epochs", []):
            if row["epoch"] - 1 not in callback.logged:       # a cached stage: its epochs from pretrain.json
                tracking.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])  # epochs done
        tracking.log_metrics({"pretrain_s": stage.record.get("seconds", 0.0),
                              "iterations": stage.record.get("iterations", 0)})
        tracking.log_dict(stage.record, "pretrain.json")
        tracking.log_file(stage.path, "pretrain")
        tracking.set_tags({"from_cache": str(not stage.trained)})
    return StageRun(stage, run_id)


def ensure_all(configs: Iterable[RunConfig], progress: bool = True) -> dict[str, StageRun]:
    """ensure_logged once per distinct stage among `configs` (those that use one); {stage_hash: StageRun}."""
    out: dict[str, StageRun] = {}
    for cfg in configs:
        if uses_pretraining(cfg) and stage_hash(cfg) not in out:
            out[stage_hash(cfg)] = ensure_logged(cfg, progress)
    return out
