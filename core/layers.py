"""The layers a run's config is merged from, and which layer set each key (``--show-config``).

A row's config is ``core/config.py``'s defaults with flat dotted-key layers merged on top, lowest first, later wins:

    default <- profile <- table profile override <- preset <- table base <- row <- command line

(``core.specs.row_layers`` builds that list and ``core.specs.resolve_row`` merges it; ``reproduce/tune.py`` adds the
tuning spec's budget between the row and the command line, ``--seeds`` sets ``train.seed`` last.) This module only
reads such a list: it never decides an order of its own, so what it shows is what a run resolves. Free of torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from core.config import RESULT_NEUTRAL_KEYS, RunConfig, apply_overrides, coerce, config_hash, to_flat_dict, \
    uses_pretraining

if TYPE_CHECKING:                     # for annotations only: core.specs imports this module
    from core.specs import Row, Spec
    from core.tuning.spec import Plan

# The layer names, lowest first (DEFAULT: the dataclass default of core/config.py).
DEFAULT = "default"
PROFILE = "profile"                               # experiments/profiles.yaml
TABLE_PROFILE = "table profile override"          # a spec's profile_overrides.<profile>
PRESET = "preset"                                 # experiments/presets.yaml, the spec's or the row's
BASE = "table base"                               # a spec's base
ROW = "row"                                       # a row's overrides
BUDGET = "tune budget"                            # the tuning spec's budgets.<profile>.overrides
COMMAND_LINE = "command line"                     # --dataset, --data-root, --device, --epochs, --set, --seeds


@dataclass(frozen=True)
class Layer:
    name: str                                     # one of the names above
    overrides: Mapping[str, Any]                  # flat dotted keys, as written
    source: str = ""                              # where it is written, e.g. "profiles.yaml, profile 'cpu'"


@dataclass(frozen=True)
class Setting:
    """One key of a resolved config: its value and the layer that set it (DEFAULT when none did)."""
    key: str
    value: Any
    layer: str
    restates: str | None = None                   # the layer below whose value a file's layer repeats


@dataclass(frozen=True)
class Restatement:
    """An override whose value is what the layers below it already give."""
    layer: Layer
    key: str
    value: Any
    below: str                                    # the layer that gives that value below it (or DEFAULT)


def merged(layers: Iterable[Layer]) -> dict[str, Any]:
    """The layers' keys merged, later layers winning: what core.config.apply_overrides receives."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer.overrides)
    return out


def restatements(layers: Sequence[Layer]) -> list[Restatement]:
    """Every override of `layers` whose value (as the config holds it: 1 == 1.0, [4] == (4,)) equals what the
    defaults and the layers below it give."""
    value = to_flat_dict(RunConfig())
    owner = dict.fromkeys(value, DEFAULT)
    out = []
    for layer in layers:
        for key, raw in layer.overrides.items():
            v = coerce(key, raw, layer.source or layer.name)
            if v == value[key]:
                out.append(Restatement(layer, key, v, owner[key]))
            value[key], owner[key] = v, layer.name
    return out


def settings(cfg: RunConfig, layers: Sequence[Layer]) -> list[Setting]:
    """Every key of `cfg` (the config `layers` resolved to) in config order: value, setting layer, restatement."""
    owner: dict[str, tuple[int, Layer]] = {}
    for i, layer in enumerate(layers):
        for key in layer.overrides:
            owner[key] = (i, layer)
    restated = {(id(r.layer), r.key): r.below for r in restatements(layers) if r.layer.name != COMMAND_LINE}
    out = []
    for key, value in to_flat_dict(cfg).items():
        if key not in owner:
            out.append(Setting(key, value, DEFAULT))
        else:
            layer = owner[key][1]
            out.append(Setting(key, value, layer.name, restated.get((id(layer), key))))
    return out


def seeded(cfg: RunConfig, seeds: Sequence[int] | None, where: str) -> list[tuple[int, RunConfig]]:
    """(seed, config) of each run of a row: ``--seeds`` sets train.seed per run; without it the config's seed."""
    return [(int(s), apply_overrides(cfg, {"train.seed": int(s)}, where))
            for s in (seeds if seeds else [cfg.train.seed])]


# ---- --show-config ----------------------------------------------------------------------------------------------

def shown_value(value: Any) -> str:
    """A value as one writes it in YAML or --set: true, null, [200, 400], 0.0003."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown_value(v) for v in value) + "]"
    return str(value)


def config_table(cfg: RunConfig, layers: Sequence[Layer], values: Mapping[str, str] | None = None,
                 set_by: Mapping[str, str] | None = None) -> list[str]:
    """The lines of the key / value / set-by table of `cfg`, a blank line between config sections. `values`
    replaces the shown value of some keys (--seeds: every seed), `set_by` their set-by text, in which "{layer}"
    stands for the layer that set the key (tuning: "searched ...; baseline from {layer}")."""
    values, set_by = values or {}, set_by or {}
    rows = []
    for s in settings(cfg, layers):
        layer = s.layer + (f" (restates {s.restates})" if s.restates else "")
        rows.append((s.key, values.get(s.key, shown_value(s.value)), set_by.get(s.key, "{layer}").replace(
            "{layer}", layer)))
    kw = max(len(k) for k, _, _ in rows)
    vw = min(max(len(v) for _, v, _ in rows), 40)
    lines, section = [f"  {'key':<{kw}}  {'value':<{vw}}  set by"], None
    for key, value, by in rows:
        if key.partition(".")[0] != section:
            lines += [""] if section else []
            section = key.partition(".")[0]
            if section == "pretrain" and not uses_pretraining(cfg):
                lines.append("  (pretrain.*: inert here, model.init is not synthetic or model.pretrained is false; "
                             "not in the config hash)")
        lines.append(f"  {key:<{kw}}  {value:<{vw}}  {by}".rstrip())
    return lines


def legend(layers: Sequence[Layer]) -> str:
    """The layers that set something, lowest first, with where each is written."""
    used = [f"{layer.name} ({layer.source})" if layer.source else layer.name for layer in layers if layer.overrides]
    return "  layers, lowest first: " + " < ".join([f"{DEFAULT} (core/config.py)", *dict.fromkeys(used)])


NEUTRAL_LINE = (f"  not in the config hash (they cannot change a result): {', '.join(RESULT_NEUTRAL_KEYS)}")


def show_row(spec: Spec, row: Row, seeds: Sequence[int] | None = None) -> str:
    """One row's --show-config: header, config hash(es) per seed, legend, the key table."""
    head = f"{spec.table}, row {row.index} '{row.label}' (profile {spec.profile}, dataset {spec.dataset}"
    if not row.run:
        return f"{head}): quoted from the literature (run: false), no config"
    head += f", preset {row.preset.name})" if row.preset else ")"
    runs = seeded(row.config, seeds, f"{spec.path}, row '{row.label}'")
    hashes = ", ".join(f"{config_hash(cfg)} (seed {seed})" for seed, cfg in runs)
    values = {"train.seed": ", ".join(str(seed) for seed, _ in runs)}
    set_by = {"train.seed": f"{COMMAND_LINE} (--seeds)"} if seeds else {}
    return "\n".join([head, f"  config hash: {hashes}  (MLflow tag config_hash)", legend(row.layers), NEUTRAL_LINE,
                      *config_table(runs[0][1], row.layers, values, set_by)])


def show_spec(spec: Spec, seeds: Sequence[int] | None = None) -> str:
    """--show-config of a table command: every selected row, one after the other."""
    return "\n\n".join(show_row(spec, row, seeds) for row in spec.rows) + "\n"


def show_plan(plan: Plan) -> str:
    """--show-config of reproduce/tune.py: the trials' base config (its lambda and margin: the baseline trial's)."""
    spec = plan.spec
    head = (f"{plan.study_name}: the trials' base config, {spec.table} row '{spec.row}' (profile {plan.profile}, "
            f"dataset {plan.dataset}); {plan.n_trials} trial(s) in all, storage {plan.storage_shown}")
    return "\n".join([head, f"  config hash of the baseline (the 'defaults' test run): {config_hash(plan.config)}",
                      legend(plan.layers), NEUTRAL_LINE,
                      *config_table(plan.config, plan.layers, set_by=spec.searched())]) + "\n"
