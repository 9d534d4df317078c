"""Optuna's plots of a study as the tuning report's PNGs (optuna.visualization's matplotlib backend, Agg)."""
from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from core.reporting import figures as figs  # sets the Agg backend
from core.tuning.study import OBJECTIVE


def write_figures(study: optuna.Study, stem: str, figures_dir: Path) -> dict[str, str]:
    """Optimisation history, parameter importances and the lambda-margin contour as PNGs (Agg backend);
    returns {figure: file name or 'not drawn: why'}. An old PNG of a figure not drawn now is removed by
    core.tuning.report once the new markdown (which no longer links it) is in place."""
    from optuna.visualization import matplotlib as ovm
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with_lambda = [t for t in complete if "reg_weight" in t.params]
    plans = {
        "history": (lambda: ovm.plot_optimization_history(study, target_name=OBJECTIVE),
                    None if complete else "no completed trial yet"),
        "importances": (lambda: ovm.plot_param_importances(study, target_name=OBJECTIVE),
                        None if len(complete) >= 3 else f"needs >= 3 completed trials, has {len(complete)}"),
        "contour": (lambda: ovm.plot_contour(study, params=["reg_weight", "margin"], target_name=OBJECTIVE),
                    None if len(with_lambda) >= 3 else
                    f"needs >= 3 completed trials with reg = on, has {len(with_lambda)}"),
    }
    out = {}
    for name, (draw, skip) in plans.items():
        path = figures_dir / f"{stem}_{name}.png"
        if skip is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ax = draw()
                fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
                figs.save(fig, path)
                out[name] = path.name
                continue
            except Exception as e:  # noqa: BLE001 - optuna refuses degenerate studies in several ways
                skip = f"{type(e).__name__}: {e}"
        out[name] = f"not drawn: {skip}"
    return out
