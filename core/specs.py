"""Experiment specs (experiments/tableN.yaml): a paper table as rows of config overrides plus the paper's numbers.

Layering of one row's config (flat dotted-key merges, later wins, no deeper inheritance; :func:`row_layers` is the
one list of them, core.layers shows which layer set each key):

    core/config.py defaults <- profile (experiments/profiles.yaml) <- the table's ``profile_overrides.<profile>``
                            <- preset (experiments/presets.yaml) <- table ``base:`` <- row ``overrides:`` <- CLI

A preset is a named flat map written once for several tables (``full_sta``: the paper's full model, lambda
included); a spec names it with ``preset:`` (every run row) or a row with its own ``preset:``.

A spec also declares the paper's claims as data (``claims:``, :class:`Claim`): a run row that the paper says beats
other run rows on some metrics; core.reporting.claims gives each a verdict from this run's per-query results.

Everything is validated on load: an unknown key, a wrong type or an impossible value raises
:class:`core.config.ConfigError` naming the file, the row, the key and what is allowed, before anything trains.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from core.config import ConfigError, RunConfig, allowed_keys, apply_overrides, flatten_overrides
from core.layers import BASE, COMMAND_LINE, PRESET, PROFILE, ROW, TABLE_PROFILE, Layer, merged
from core.record import METRICS

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
PROFILES_PATH = EXPERIMENTS / "profiles.yaml"
PRESETS_PATH = EXPERIMENTS / "presets.yaml"
PAPER_DATASETS = ("mars", "duke")                # datasets the paper reports
DATASET_NAMES = {"mars": "MARS", "duke": "DukeMTMC-VideoReID", "synthetic": "synthetic"}
SPEC_KEYS = {"table": str, "title": str, "metrics": list, "preset": str, "base": dict, "rows": list, "notes": str,
             "claims": list, "claims_note": str, "figure": dict, "profile_overrides": dict}
FIGURE_KEYS = {"kind": str, "x": str, "label": str}
FIGURE_KINDS = ("bars", "lines")    # bars of every row | lines over the rows' values of the override key x
CLAIM_KEYS = {"row": str, "beats": list, "metrics": list, "note": str}
ROW_KEYS = {"label": str, "overrides": dict, "preset": str, "paper": dict, "deviation": str, "run": bool}
PROFILE_KEYS = {"description": str, "overrides": dict}
PRESET_KEYS = {"description": str, "overrides": dict, "deviation": str}


@dataclass(frozen=True)
class Preset:
    """A named configuration of experiments/presets.yaml (e.g. full_sta)."""
    name: str
    overrides: dict[str, Any]                    # flat dotted keys
    deviation: str = ""                          # why its values differ from, or interpret, the paper
    description: str = ""


@dataclass(frozen=True)
class Row:
    """One row of a paper table. ``config`` is the resolved run config (None for quoted literature rows)."""
    index: int                                   # 1-based position in the table
    label: str                                   # as printed in the paper
    overrides: dict[str, Any]                    # flat dotted keys
    paper: dict[str, dict[str, float | None]]    # dataset -> metric -> percent (None: "—" in the paper)
    deviation: str = ""
    run: bool = True                             # False: a literature row quoted by the paper
    config: RunConfig | None = None
    preset: Preset | None = None                 # the row's own or the spec's preset (run rows only)
    layers: tuple[Layer, ...] = field(default=(), compare=False, repr=False)   # what `config` was merged from

    @property
    def full_deviation(self) -> str:
        """The row's deviation note followed by its preset's (the MLflow run note)."""
        return " ".join(t for t in (self.deviation, self.preset.deviation if self.preset else "") if t)


@dataclass(frozen=True)
class Claim:
    """The paper's claim that run row `row` beats each run row of `beats` on each of `metrics` (higher is better)."""
    row: str                                     # a run row's label
    beats: tuple[str, ...]                       # run rows' labels
    metrics: tuple[str, ...]                     # a subset of the spec's metrics (a re-ranked row: its rerank_*)
    note: str = ""                               # where the paper says so


@dataclass(frozen=True)
class Figure:
    kind: str                                    # one of FIGURE_KINDS
    x: str = ""                                  # lines: the override key the rows sweep
    label: str = ""                              # lines: the x axis label


@dataclass(frozen=True)
class Spec:
    path: Path
    table: str                                   # "table1"
    title: str
    metrics: tuple[str, ...]                     # the metric columns the paper prints
    base: dict[str, Any]
    rows: tuple[Row, ...]
    profile_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile -> keys on top of it,
                                                 # for this table only (e.g. Table 3's frame size on the cpu profile)
    notes: str = ""
    claims: tuple[Claim, ...] = ()
    claims_note: str = ""                        # why the claims are these (e.g. a claim that cannot be tested)
    figure: Figure | None = None                 # the paper-vs-run plot of the report (none: no such plot)
    profile: str | None = None                   # set by load_spec
    dataset: str | None = None
    cli_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def run_rows(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.run)


def spec_path(table: str) -> Path:
    """experiments/<table>.yaml, e.g. spec_path('table1')."""
    path = EXPERIMENTS / f"{table}.yaml"
    if not path.exists():
        raise ConfigError(f"no spec for '{table}'; available: {', '.join(p.stem for p in all_spec_paths())}")
    return path


def all_spec_paths() -> list[Path]:
    return sorted(EXPERIMENTS.glob("table*.yaml"))


class NumberLoader(yaml.SafeLoader):
    """Safe YAML that reads numbers as users write them: PyYAML follows YAML 1.1, where a float needs a dot and a
    signed exponent (1e-3, 3E-4 and 1.0e5 are strings there); here they are floats, as in YAML 1.2 and Python."""


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str, where: str) -> Any:
    """YAML text (NumberLoader); a syntax error is a one-line ConfigError naming `where`, the line and column."""
    try:
        return yaml.load(text, Loader=NumberLoader)
    except yaml.YAMLError as e:
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None) or str(e).splitlines()[0]
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}: not valid YAML ({at}{problem})") from e


def read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read spec ({e})") from e
    return parse_yaml(text, str(path))


def check_keys(tree: Any, allowed: Mapping[str, type | tuple], where: str, required: Sequence[str] = ()) -> dict:
    """Refuse a YAML mapping with unknown keys, wrong types (a bool is not a number) or missing required keys."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: must be a mapping with keys {', '.join(allowed)}, got {tree!r}")
    for key, value in tree.items():
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}'; allowed: {', '.join(allowed)}")
        kind = allowed[key]
        if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(f"{where}: key '{key}' must be a {names}, got {value!r}")
    for key in required:
        if tree.get(key) is None:
            raise ConfigError(f"{where}: key '{key}' is required")
    return tree


def _flat_overrides(tree: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Flatten nested or dotted overrides and refuse keys config.py does not have."""
    flat = flatten_overrides(tree or {})
    known = set(allowed_keys())
    for key in flat:
        if key not in known:
            section = key.partition(".")[0]
            close = [k for k in sorted(known) if k.startswith(section + ".")] or sorted(known)
            raise ConfigError(f"{where}: unknown key '{key}'; allowed: {', '.join(close)}")
    return flat


def _paper_numbers(paper: Any, metrics: tuple[str, ...], where: str) -> dict[str, dict[str, float | None]]:
    if not paper:
        raise ConfigError(f"{where}: key 'paper' is required: the paper's numbers per dataset "
                          f"({', '.join(PAPER_DATASETS)}), metrics {', '.join(metrics)}, in percent")
    out: dict[str, dict[str, float | None]] = {}
    for ds, numbers in paper.items():
        if ds not in PAPER_DATASETS:
            raise ConfigError(f"{where}: key 'paper.{ds}' is not a paper dataset; allowed: {', '.join(PAPER_DATASETS)}")
        if not isinstance(numbers, dict):
            raise ConfigError(f"{where}: key 'paper.{ds}' must map metrics to numbers, got {numbers!r}")
        for m in numbers:
            if m not in metrics:
                raise ConfigError(f"{where}: key 'paper.{ds}.{m}' is not a metric of this table; "
                                  f"allowed: {', '.join(metrics)}")
        missing = [m for m in metrics if m not in numbers]
        if missing:
            raise ConfigError(f"{where}: key 'paper.{ds}' lacks {', '.join(missing)} "
                              f"(write null for a '—' in the paper)")
        for m, v in numbers.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100):
                raise ConfigError(f"{where}: key 'paper.{ds}.{m}' must be a percentage in [0, 100] or null, got {v!r}")
        out[ds] = {m: None if numbers[m] is None else float(numbers[m]) for m in metrics}
    return out


def load_presets(path: str | Path = PRESETS_PATH) -> dict[str, Preset]:
    """{'full_sta': Preset, ...} from experiments/presets.yaml, keys checked."""
    return {name: Preset(name, _flat_overrides(raw["overrides"], where),
                         deviation=" ".join((raw.get("deviation") or "").split()),
                         description=" ".join((raw.get("description") or "").split()))
            for name, (raw, where) in _named_blocks(path, "preset", PRESET_KEYS).items()}


def _named_blocks(path: str | Path, kind: str, keys) -> dict[str, tuple[dict, str]]:
    """{name: (block, where)} of a YAML file mapping names to blocks with `keys` (overrides required)."""
    path = Path(path)
    tree = read_yaml(path)
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{path}: must map {kind} names to {{{', '.join(keys)}}}")
    out = {}
    for name, raw in tree.items():
        where = f"{path}, {kind} '{name}'"
        check_keys(raw, keys, where, required=("overrides",))
        out[name] = (raw, where)
    return out


def _preset(name: str | None, presets: Mapping[str, Preset], where: str) -> Preset | None:
    if name is None:
        return None
    if name not in presets:
        raise ConfigError(f"{where}: key 'preset' is {name!r}; allowed: {', '.join(presets)} ({PRESETS_PATH.name})")
    return presets[name]


def read_spec(path: str | Path, presets_path: str | Path = PRESETS_PATH) -> Spec:
    """Parse and check a spec's structure, keys and paper numbers (rows not yet resolved to configs)."""
    path = Path(path)
    tree = read_yaml(path)
    check_keys(tree, SPEC_KEYS, str(path), required=("table", "title", "metrics", "rows"))
    presets = load_presets(presets_path)
    spec_preset = _preset(tree.get("preset"), presets, str(path))
    metrics = tuple(tree["metrics"])
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ConfigError(f"{path}: key 'metrics' has {bad or 'nothing'}; allowed: {', '.join(METRICS)}")
    base = _flat_overrides(tree.get("base"), f"{path}, base")
    rows, seen = [], set()
    for i, raw in enumerate(tree["rows"], start=1):
        where = f"{path}, row {i}" + (f" '{raw['label']}'" if isinstance(raw, dict) and raw.get("label") else "")
        check_keys(raw, ROW_KEYS, where, required=("label",))
        label = raw["label"]
        if label in seen:
            raise ConfigError(f"{where}: duplicate label '{label}'; labels must be unique within a table")
        seen.add(label)
        run = raw.get("run", True)
        for key in ("overrides", "preset"):
            if not run and raw.get(key):
                raise ConfigError(f"{where}: key '{key}' given on a row with run: false (a quoted literature row)")
        rows.append(Row(index=i, label=label, overrides=_flat_overrides(raw.get("overrides"), where),
                        paper=_paper_numbers(raw.get("paper"), metrics, where),
                        deviation=" ".join((raw.get("deviation") or "").split()), run=run,
                        preset=(_preset(raw.get("preset"), presets, where) or spec_preset) if run else None))
    if not rows:
        raise ConfigError(f"{path}: key 'rows' is empty")
    by_profile = {str(name): _flat_overrides(keys, f"{path}, profile_overrides.{name}")
                  for name, keys in (tree.get("profile_overrides") or {}).items()}
    return Spec(path=path, table=tree["table"], title=tree["title"], metrics=metrics, base=base, rows=tuple(rows),
                profile_overrides=by_profile,
                notes=" ".join((tree.get("notes") or "").split()),
                claims=_claims(tree.get("claims") or [], rows, metrics, path),
                claims_note=" ".join((tree.get("claims_note") or "").split()),
                figure=_figure(tree.get("figure"), f"{path}, figure"))


def _figure(raw: dict | None, where: str) -> Figure | None:
    """The spec's `figure:` ({kind: bars} or {kind: lines, x: <override key>, label: <axis label>})."""
    if raw is None:
        return None
    check_keys(raw, FIGURE_KEYS, where, required=("kind",))
    kind = raw["kind"]
    if kind not in FIGURE_KINDS:
        raise ConfigError(f"{where}: key 'kind' is {kind!r}; allowed: {', '.join(FIGURE_KINDS)}")
    if kind == "bars" and (raw.get("x") or raw.get("label")):
        raise ConfigError(f"{where}: keys 'x' and 'label' are for kind 'lines' only")
    if kind == "lines" and not (raw.get("x") in allowed_keys() and raw.get("label")):
        raise ConfigError(f"{where}: kind 'lines' needs 'x', a config key the rows override (got {raw.get('x')!r}), "
                          f"and 'label', the axis label")
    return Figure(kind, raw.get("x", ""), raw.get("label", ""))


def _claims(raw_claims: list, rows: Sequence[Row], metrics: tuple[str, ...], path: Path) -> tuple[Claim, ...]:
    """Check each claim: its row and beaten rows are run rows of the spec (a quoted row has no per-query results
    to compare), distinct, and its metrics are the spec's."""
    runnable = {r.label: r.run for r in rows}
    out = []
    for i, raw in enumerate(raw_claims, start=1):
        where = f"{path}, claim {i}" + (f" '{raw['row']}'" if isinstance(raw, dict) and raw.get("row") else "")
        check_keys(raw, CLAIM_KEYS, where, required=("row", "beats", "metrics"))
        beats, names = tuple(raw["beats"]), tuple(raw["metrics"])
        for key, labels in (("row", (raw["row"],)), ("beats", beats)):
            for label in labels:
                if not isinstance(label, str) or label not in runnable:
                    raise ConfigError(f"{where}: key '{key}' names {label!r}, which is not a row; rows: "
                                      f"{', '.join(r.label for r in rows)}")
                if not runnable[label]:
                    raise ConfigError(f"{where}: key '{key}' names {label!r}, a quoted row (run: false): it has no "
                                      f"per-query results to compare; claims compare run rows")
        if not beats or raw["row"] in beats or len(set(beats)) != len(beats):
            raise ConfigError(f"{where}: key 'beats' must list other rows, each once, got {list(beats)!r}")
        bad = [m for m in names if m not in metrics]
        if bad or not names or len(set(names)) != len(names):
            raise ConfigError(f"{where}: key 'metrics' has {bad or list(names)!r}; allowed: {', '.join(metrics)} "
                              f"(the table's metrics, each once)")
        out.append(Claim(raw["row"], beats, names, " ".join((raw.get("note") or "").split())))
    return tuple(out)


def load_profiles(path: str | Path = PROFILES_PATH) -> dict[str, dict[str, Any]]:
    """{'paper': {dotted key: value}, 'cpu': {...}} from experiments/profiles.yaml, keys checked."""
    return {name: _flat_overrides(raw["overrides"], where)
            for name, (raw, where) in _named_blocks(path, "profile", PROFILE_KEYS).items()}


def profile_descriptions(path: str | Path = PROFILES_PATH) -> dict[str, str]:
    return {name: " ".join((p.get("description") or "").split()) for name, p in read_yaml(Path(path)).items()}


def row_layers(spec: Spec, row: Row, profile: str, profile_keys: Mapping[str, Any],
               cli: Sequence[Layer]) -> tuple[Layer, ...]:
    """The layers of a row's config, lowest first (later wins), those that set something: the profile, the table's
    keys for that profile, the preset, the table's base, the row, then `cli` (the command line's layers)."""
    name = spec.path.name
    layers = (Layer(PROFILE, profile_keys, f"{PROFILES_PATH.name}, profile '{profile}'"),
              Layer(TABLE_PROFILE, spec.profile_overrides.get(profile, {}), f"{name}, profile_overrides.{profile}"),
              Layer(PRESET, row.preset.overrides if row.preset else {},
                    f"{PRESETS_PATH.name}, preset '{row.preset.name}'" if row.preset else ""),
              Layer(BASE, spec.base, f"{name}, base"),
              Layer(ROW, row.overrides, f"{name}, row {row.index}"),
              *cli)
    return tuple(layer for layer in layers if layer.overrides)


def resolve_row(layers: Sequence[Layer], where: str) -> RunConfig:
    """The defaults with `layers` merged on top (row_layers), validated as one config (errors name `where`, key)."""
    cfg = apply_overrides(RunConfig(), merged(layers), where)
    if cfg.data.dataset in PAPER_DATASETS and not Path(cfg.data.root).is_dir():
        raise ConfigError(f"{where}: key 'data.root' is {cfg.data.root!r}, which is not a folder; it must hold "
                          f"the downloaded {DATASET_NAMES[cfg.data.dataset]} dataset (docs/gpu.md)")
    return cfg


def load_spec(path: str | Path, profile: str = "cpu", dataset: str = "synthetic", data_root: str | None = None,
              overrides: Mapping[str, Any] | None = None, profiles_path: str | Path = PROFILES_PATH,
              above_rows: Sequence[Layer] = ()) -> Spec:
    """Read a spec and resolve every runnable row's config for a profile and dataset.

    ``overrides`` are the CLI's dotted keys (highest precedence); ``dataset``/``data_root`` set data.dataset/root;
    ``above_rows`` are layers between those two (reproduce/tune.py: the tuning spec's budget).
    """
    spec = read_spec(path)
    profiles = load_profiles(profiles_path)
    if profile not in profiles:
        raise ConfigError(f"{profiles_path}: unknown profile '{profile}'; allowed: {', '.join(profiles)}")
    unknown = sorted(set(spec.profile_overrides) - set(profiles))
    if unknown:
        raise ConfigError(f"{spec.path}: key 'profile_overrides' names unknown profile(s) {unknown}; allowed: "
                          f"{', '.join(profiles)}")
    cli_layers = (Layer(COMMAND_LINE, {"data.dataset": dataset, **({"data.root": data_root} if data_root else {})},
                        "--dataset, --data-root"),
                  *(replace(layer, overrides=_flat_overrides(layer.overrides, layer.source)) for layer in above_rows),
                  Layer(COMMAND_LINE, _flat_overrides(overrides, "command-line overrides"),
                        "--set, --device, --epochs"))
    cli = merged(cli_layers)
    rows = []
    for row in spec.rows:
        where = f"{spec.path}, row {row.index} '{row.label}' (profile '{profile}', dataset '{cli['data.dataset']}')"
        if row.run:
            layers = row_layers(spec, row, profile, profiles[profile], cli_layers)
            row = replace(row, config=resolve_row(layers, where), layers=layers)
        rows.append(row)
    return replace(spec, rows=tuple(rows), profile=profile, dataset=cli["data.dataset"], cli_overrides=cli)


def select_rows(spec: Spec, selectors: Sequence[str] | None) -> Spec:
    """Keep the rows named by label or 1-based index (all rows when `selectors` is empty)."""
    if not selectors:
        return spec
    by_label = {r.label: r for r in spec.rows}
    chosen = []
    for s in selectors:
        s = str(s).strip()
        row = by_label.get(s) or (spec.rows[int(s) - 1] if s.isascii() and s.isdigit() and 1 <= int(s) <= len(spec.rows) else None)
        if row is None:
            valid = "; ".join(f"{r.index}: {r.label}" for r in spec.rows)
            raise ConfigError(f"{spec.path}: no row '{s}'; rows are {valid}")
        if row not in chosen:
            chosen.append(row)
    return replace(spec, rows=tuple(sorted(chosen, key=lambda r: r.index)))
