"""The tuning spec (experiments/tune_lambda_margin.yaml): search space, validation split, sampler, pruner and
per-profile budgets, checked before any trial runs; and the study it resolves to (``plan_study`` -> ``Plan``: config,
baseline, study name, storage location). Read by core.tuning and core.cli; free of optuna so it can be checked alone.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from core import endpoints
from core.config import ConfigError, RunConfig, apply_overrides, flatten_overrides
from core.layers import BUDGET, Layer
from core.specs import EXPERIMENTS, check_keys, load_profiles, load_spec, read_yaml, select_rows, spec_path

DEFAULT_SPEC = EXPERIMENTS / "tune_lambda_margin.yaml"
SPEC_KEYS = {"study": str, "config": dict, "search": dict, "validation": dict, "sampler": dict, "pruner": dict,
             "report_every": int, "budgets": dict}
# validation.queries: core.data.validation.QUERY_MODES, repeated here so that a spec is checked without torch
# (tests/test_tuning_compare.py checks that both agree)
QUERY_MODES = ("all", "one")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")      # storage URL schemes (a "+driver" suffix is allowed)
SEARCHED = ("loss.reg_weight", "loss.margin")      # the config keys a study searches (lambda, margin)


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool


@dataclass(frozen=True)
class Budget:
    n_trials: int
    timeout: float | None                   # seconds of search per invocation (None: no limit)
    overrides: dict[str, Any]               # flat config keys, for trials and test runs alike


@dataclass(frozen=True)
class TuneSpec:
    path: Path
    study: str                              # default study name
    table: str                              # spec whose row is tuned, e.g. "table1"
    row: str                                # its label
    reg_weight: Range                       # lambda when reg = on (log scale)
    reg_off: bool                           # also search lambda = 0
    margin: Range
    val_fraction: float
    val_seed: int
    val_queries: str                        # core.data.validation.QUERY_MODES: all | one
    sampler_seed: int
    n_startup_trials: int
    pruner_startup: int
    pruner_warmup: int
    report_every: int
    budgets: dict[str, Budget]

    def search_space(self) -> dict[str, Any]:
        """What a study stores (user attr "search_space") and compares when it is resumed."""
        space: dict[str, Any] = {"reg_weight": dataclasses.asdict(self.reg_weight),
                                 "margin": dataclasses.asdict(self.margin)}
        if self.reg_off:
            space["reg"] = ["on", "off"]
        return space

    def searched(self) -> dict[str, str]:
        """{config key: how the study searches it} (--show-config; "{layer}": where the baseline comes from)."""
        def shown(r: Range) -> str:
            return f"{r.low:g}..{r.high:g}{', log scale' if r.log else ''}"
        off = ", or 0 (reg off)" if self.reg_off else ""
        return {SEARCHED[0]: f"searched {shown(self.reg_weight)}{off}; baseline from {{layer}}",
                SEARCHED[1]: f"searched {shown(self.margin)}; baseline from {{layer}}"}


def _range(tree: Any, where: str, log_default: bool, allow_linear: bool) -> Range:
    allowed = {"low": (int, float), "high": (int, float), **({"log": bool} if allow_linear else {})}
    check_keys(tree, allowed, where, required=("low", "high"))
    low, high, log = float(tree["low"]), float(tree["high"]), bool(tree.get("log", log_default))
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{where}: empty or inverted range: low {low:g} must be < high {high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: key 'low' is {low:g}; a log-scale range needs low > 0 "
                          f"(lambda = 0 is the separate reg: off point, see search.reg_off)")
    if low < 0:
        raise ConfigError(f"{where}: key 'low' is {low:g}; must be >= 0")
    return Range(low, high, log)


def read_tune_spec(path: str | Path = DEFAULT_SPEC) -> TuneSpec:
    """Read and check a tuning spec; every error is a ConfigError naming the file, the key and the value."""
    path = Path(path)
    tree = read_yaml(path)
    check_keys(tree, SPEC_KEYS, str(path), required=("study", "config", "search", "budgets"))
    if not STUDY_NAME.match(tree["study"]):
        raise ConfigError(f"{path}: key 'study' is {tree['study']!r}; use letters, digits, '_', '-', '.'")
    config = check_keys(tree["config"], {"spec": str, "row": str}, f"{path}, config", required=("spec", "row"))
    search = check_keys(tree["search"], {"reg_weight": dict, "reg_off": bool, "margin": dict}, f"{path}, search",
                   required=("reg_weight", "margin"))
    val = check_keys(tree.get("validation") or {}, {"fraction": (int, float), "seed": int, "queries": str},
                     f"{path}, validation")
    fraction = float(val.get("fraction", 0.2))
    if not 0 < fraction < 1:
        raise ConfigError(f"{path}, validation: key 'fraction' is {fraction:g}; must be in (0, 1)")
    queries = val.get("queries", "all")
    if queries not in QUERY_MODES:
        raise ConfigError(f"{path}, validation: key 'queries' is {queries!r}; allowed: {', '.join(QUERY_MODES)} "
                          f"(core/data/validation.py)")
    sampler = check_keys(tree.get("sampler") or {}, {"seed": int, "n_startup_trials": int}, f"{path}, sampler")
    pruner = check_keys(tree.get("pruner") or {}, {"n_startup_trials": int, "n_warmup_steps": int}, f"{path}, pruner")
    every = tree.get("report_every", 1)
    if every < 1:
        raise ConfigError(f"{path}: key 'report_every' is {every}; must be >= 1")
    budgets = {}
    profiles = load_profiles()
    for name, raw in tree["budgets"].items():
        where = f"{path}, budgets.{name}"
        if name not in profiles:
            raise ConfigError(f"{where}: '{name}' is not a profile of experiments/profiles.yaml; "
                              f"allowed: {', '.join(profiles)}")
        check_keys(raw, {"n_trials": int, "timeout": (int, float), "overrides": dict}, where, required=("n_trials",))
        if raw["n_trials"] < 1:
            raise ConfigError(f"{where}: key 'n_trials' is {raw['n_trials']}; must be >= 1")
        if raw.get("timeout") is not None and not (math.isfinite(raw["timeout"]) and raw["timeout"] > 0):
            raise ConfigError(f"{where}: key 'timeout' is {raw['timeout']}; must be a finite number > 0 of seconds, "
                              f"or null (no limit)")
        overrides = flatten_overrides(raw.get("overrides") or {})
        apply_overrides(RunConfig(), overrides, f"{where}.overrides")      # unknown keys, types, values
        for key in SEARCHED:
            if key in overrides:
                raise ConfigError(f"{where}.overrides: key '{key}' is searched; it cannot be fixed here")
        budgets[name] = Budget(raw["n_trials"], raw.get("timeout"), overrides)
    return TuneSpec(path=path, study=tree["study"], table=config["spec"], row=config["row"],
                    reg_weight=_range(search["reg_weight"], f"{path}, search.reg_weight", True, False),
                    reg_off=search.get("reg_off", True),
                    margin=_range(search["margin"], f"{path}, search.margin", False, True),
                    val_fraction=fraction, val_seed=val.get("seed", 0), val_queries=queries,
                    sampler_seed=sampler.get("seed", 0),
                    n_startup_trials=sampler.get("n_startup_trials", 10),
                    pruner_startup=pruner.get("n_startup_trials", 5), pruner_warmup=pruner.get("n_warmup_steps", 0),
                    report_every=every, budgets=budgets)


# ---- the study a spec resolves to --------------------------------------------------------------------------------

def storage_location(storage: str | None, study_name: str, work_dir: str | Path = "runs") -> str:
    """The storage of a study: a URL, a journal file path, or by default <work_dir>/optuna/<study>.journal.

    Allowed: sqlite:///path, postgresql[+driver]://..., mysql[+driver]://..., or a path ending in .journal.
    """
    if not storage:
        return str(Path(work_dir) / "optuna" / f"{study_name}.journal")
    if "://" in storage:
        scheme = storage.split("://", 1)[0]
        if scheme.split("+", 1)[0] not in RDB_SCHEMES or (scheme == "sqlite" and not storage.startswith("sqlite:///")):
            raise ConfigError(f"--storage {endpoints.shown(repr(storage))}: unknown URL scheme '{scheme}://'; allowed: sqlite:///PATH, "
                              f"postgresql[+driver]://..., mysql[+driver]://..., or a journal file path ending "
                              f"in .journal")
        return storage
    if not storage.endswith(".journal"):
        raise ConfigError(f"--storage {endpoints.shown(repr(storage))}: a journal file path must end in .journal (or give a URL: "
                          f"sqlite:///PATH, postgresql://..., mysql://...)")
    return storage


@dataclass(frozen=True)
class Plan:
    """A resolved, validated study: everything checked before a trial runs."""
    spec: TuneSpec
    profile: str
    dataset: str
    study_name: str
    storage: str                            # URL or journal path
    config: RunConfig                       # every trial and test run: this with lambda and margin replaced
    baseline: dict[str, Any]                # the baseline trial's params (reg, reg_weight, margin)
    n_trials: int                           # the study's total (finished or running trials)
    timeout: float | None
    work_dir: Path
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)   # the command line's --set (flat keys)
    data_root: str | None = None            # --data-root as given
    layers: tuple[Layer, ...] = dataclasses.field(default=(), compare=False)   # what `config` was merged from

    @property
    def experiment(self) -> str:
        return f"STA {self.spec.study}"

    @property
    def baseline_values(self) -> tuple[float, float]:
        return lambda_margin(self.baseline)

    @property
    def storage_shown(self) -> str:
        """The storage without its password (reports, tags, messages)."""
        return endpoints.shown(self.storage)


def default_study_name(spec: TuneSpec, dataset: str, profile: str) -> str:
    return spec.study if (dataset, profile) == ("synthetic", "cpu") else f"{spec.study}_{dataset}_{profile}"


def plan_study(spec_file: str | Path = DEFAULT_SPEC, profile: str = "cpu", dataset: str = "synthetic",
               data_root: str | None = None, overrides: Mapping[str, Any] | None = None,
               study_name: str | None = None, storage: str | None = None, n_trials: int | None = None,
               timeout: float | None = None, work_dir: str | Path = "runs") -> Plan:
    """Read the spec, resolve the tuned row's config (profile <- table base <- row <- budget <- `overrides`) and
    check the search space, baseline, storage URL and study name. ``timeout`` 0 means no limit."""
    spec = read_tune_spec(spec_file)
    if profile not in spec.budgets:
        raise ConfigError(f"{spec.path}: no budgets.{profile}; profiles with a budget: {', '.join(spec.budgets)}")
    budget = spec.budgets[profile]
    cli = flatten_overrides(overrides or {})
    for key in SEARCHED:
        if key in cli:
            raise ConfigError(f"command line: key '{key}' is what the study searches; it cannot be set")
    table = load_spec(spec_path(spec.table), profile=profile, dataset=dataset, data_root=data_root, overrides=cli,
                      above_rows=(Layer(BUDGET, budget.overrides, f"{spec.path.name}, budgets.{profile}"),))
    try:
        row = select_rows(table, [spec.row]).rows[0]
    except ConfigError as e:
        raise ConfigError(f"{spec.path}, config.row: {e}") from e
    if row.config is None:
        raise ConfigError(f"{spec.path}, config.row: '{spec.row}' is a quoted literature row, not a run")
    cfg = row.config
    lam, margin = cfg.loss.reg_weight, cfg.loss.margin
    where = f"{spec.path} (baseline from {table.path.name}, row '{spec.row}')"
    if not spec.margin.low <= margin <= spec.margin.high:
        raise ConfigError(f"{where}: the baseline margin {margin:g} lies outside search.margin "
                          f"[{spec.margin.low:g}, {spec.margin.high:g}]")
    if lam > 0 and not spec.reg_weight.low <= lam <= spec.reg_weight.high:
        raise ConfigError(f"{where}: the baseline lambda {lam:g} lies outside search.reg_weight "
                          f"[{spec.reg_weight.low:g}, {spec.reg_weight.high:g}]")
    if lam == 0 and not spec.reg_off:
        raise ConfigError(f"{where}: the baseline lambda is 0 but search.reg_off is false")
    baseline = {"reg": "on", "reg_weight": lam, "margin": margin} if lam > 0 else {"reg": "off", "margin": margin}
    if not spec.reg_off:
        baseline.pop("reg")
    name = study_name or default_study_name(spec, dataset, profile)
    if not STUDY_NAME.match(name):
        raise ConfigError(f"--study-name {name!r}: use 1-100 letters, digits, '_', '-', '.' (starting with a "
                          f"letter or digit)")
    n = budget.n_trials if n_trials is None else n_trials
    if n < 0:
        raise ConfigError(f"--n-trials {n}: must be >= 0 (0: no new trial; test evaluation and report only)")
    t = budget.timeout if timeout is None else (timeout or None)
    if t is not None and t < 0:
        raise ConfigError(f"--timeout {t}: must be >= 0 seconds (0: no limit)")
    return Plan(spec=spec, profile=profile, dataset=dataset, study_name=name,
                storage=storage_location(storage, name, work_dir), config=cfg, baseline=baseline, n_trials=n,
                timeout=t, work_dir=Path(work_dir), overrides=cli, data_root=data_root, layers=row.layers)


def lambda_margin(params: Mapping[str, Any]) -> tuple[float, float]:
    """(lambda, margin) of a trial's params: lambda = 0 when reg is off."""
    lam = 0.0 if params.get("reg", "on") == "off" else float(params["reg_weight"])
    return lam, float(params["margin"])


def with_values(cfg: RunConfig, lam: float, margin: float) -> RunConfig:
    return apply_overrides(cfg, dict(zip(SEARCHED, (lam, margin))), "tuning")
