"""Recipes, training side: ``mer train --recipe`` fills the command's options from a recipe
and finds the stores extracted with its settings (or its substitutes).

Reading recipe files is ``mer.common.recipes``; planning the extraction is
``mer.extract.recipes``.
"""
from __future__ import annotations

from mer.common.errors import MerError, UsageError
from mer.common.recipes import Recipe, load
from mer.extract.recipes import Plan, match_config, missing_reason, rename_input


def finetuned(recipe: Recipe) -> list[str]:
    """The features whose encoders the recipe fine-tunes (``train: {finetune: bert}``)."""
    v = recipe.train.get("finetune") or []
    return [x.strip() for x in (v.split(",") if isinstance(v, str) else v) if str(x).strip()]


def train_plan(recipe: Recipe, dataset: str, cache=None, manifest=None, substitute: bool = False,
               tuned: tuple = (), encoder_given: bool = False) -> Plan:
    """The stores a recipe trains on: for each feature the newest complete store extracted
    with the recipe's settings, else (with ``substitute``) one of its substitute, else an
    error naming the `mer extract --recipe` command (and the encoder to install).

    A feature in ``tuned`` (fine-tuned) reads no store: its encoder runs in the model, so
    what must exist is the encoder (the recipe's, else with ``substitute`` its substitute,
    which is then the one fine-tuned); ``encoder_given``: --encoder-model names it."""
    from mer.extract.cache import find_store

    feats: dict[str, dict] = {}
    inputs = recipe.inputs
    subs: list[dict] = []
    for f in tuned:
        cfg = recipe.features.get(f)
        if cfg is None:
            raise UsageError(f"recipe {recipe.name}: --finetune {f}: the recipe has no {f} feature "
                             f"(its features: {', '.join(recipe.features)})")
        why = None if encoder_given else missing_reason(f, cfg)
        s = recipe.substitute.get(f)
        if why is None:
            feats[f] = cfg
        elif substitute and s is not None and s.get("feature", f) == f:
            feats[f] = {**cfg, **(s.get("config") or {})}
            subs.append({"feature": f, "wanted": cfg, "used_feature": f, "used": feats[f], "why": why,
                         "fine_tuned": True})
        else:
            raise MerError(f"recipe {recipe.name}: fine-tuning {f}: {why}; give --encoder-model PATH, or run with "
                           f"--substitute to fine-tune the packaged substitute (the results are then not the paper's)")

    def has(f, cfg) -> bool:
        try:
            find_store(dataset, f, cache=cache, manifest=manifest, where=match_config(f, cfg))
            return True
        except MerError:
            return False

    for f, cfg in recipe.features.items():
        if f in tuned:
            continue
        if has(f, cfg):
            feats[f] = cfg
            continue
        s = recipe.substitute.get(f)
        if substitute and s is not None:
            new = s.get("feature", f)
            new_cfg = {**(cfg if new == f else {}), **(s.get("config") or {})}
            if has(new, new_cfg):
                feats[new] = new_cfg
                if new != f:
                    inputs = rename_input(inputs, f, new)
                subs.append({"feature": f, "wanted": cfg, "used_feature": new, "used": new_cfg,
                             "why": missing_reason(f, cfg) or "no store with the recipe's settings"})
                continue
        how = f"`mer extract --recipe {recipe.name} --dataset {dataset}" + (" --substitute`" if substitute else "`")
        why = missing_reason(f, cfg)
        nor = (f" nor its substitute {s.get('feature', f)} {s.get('config') or {}}" if substitute and s is not None else "")
        raise MerError(f"recipe {recipe.name}: no complete {f} store extracted with {cfg}{nor} for {dataset} from the "
                       f"current manifest; run {how} first" + (f" (it {why})" if why and not substitute else ""))
    return Plan(feats, inputs, subs)


# Recipe keys -> mer train options (the CLI parameter names).
TRAIN_OPTIONS = {"optimizer": "optimizer", "lr": "lr", "weight_decay": "weight_decay", "batch_size": "batch_size",
                 "epochs": "epochs", "patience": "patience", "monitor": "monitor", "grad_clip": "grad_clip",
                 "balanced": "balanced", "max_len": "max_len", "batch_frames": "batch_frames",
                 "accumulate": "accumulate", "warmup": "warmup", "schedule": "schedule",
                 "finetune": "finetune", "encoder_lr": "encoder_lr", "freeze_layers": "freeze_layers"}
# A fine-tuned feature's settings -> the fine-tuning options they fill (the encoder tuned is
# the one the recipe extracts, or its substitute).
ENCODER_OPTIONS = {"model": "encoder_model", "layer": "encoder_layer", "max_tokens": "max_tokens"}


def train_setup(name: str, dataset: str, values: dict, given: set[str], cache=None, manifest=None,
                substitute: bool = False) -> tuple[dict, dict, dict]:
    """``mer train --recipe``: (option values, the run's recipe record, store configs).

    ``values``: the command's option values by parameter name; ``given``: the names the user
    typed. The recipe fills every option not given; a given one overrides the recipe and is
    recorded under ``overrides`` as ``{option: {"recipe": ..., "command line": ...}}``."""
    r = load(name)
    if r.dataset != dataset:
        raise UsageError(f"--recipe {r.name} is set up for --dataset {r.dataset} (its features, scheme and protocol "
                         f"are {r.dataset}'s), not {dataset}")
    out = dict(values)
    overrides: dict[str, dict] = {}

    def take(opt, recipe_value, same=lambda a, b: a == b):
        if opt in given:
            if not same(values[opt], recipe_value):
                overrides[opt] = {"recipe": recipe_value, "command line": values[opt]}
        else:
            out[opt] = recipe_value

    if "finetune" in given:
        tuned = [x.strip() for x in (values.get("finetune") or "").split(",") if x.strip()]
    else:
        tuned = finetuned(r)
    p = None
    if "features" not in given:
        p = train_plan(r, dataset, cache, manifest, substitute, tuple(tuned), "encoder_model" in given)
    take("features", (p.inputs,) if p else (r.inputs,), lambda a, b: list(a) == list(b))
    take("fusion", [r.fusion], lambda a, b: list(a) == list(b))
    take("protocol", r.protocol)
    take("scheme", r.scheme)
    take("context", r.context)
    for k, v in r.train.items():
        v = ",".join(finetuned(r)) if k == "finetune" else v
        take(TRAIN_OPTIONS[k], v)
    if len(tuned) > 1:   # one set of --encoder-* options serves one encoder
        raise UsageError(f"recipe {r.name}: --finetune {','.join(tuned)}: a recipe fine-tunes one encoder")
    for f in tuned:   # the encoder tuned is the feature's (or its substitute's), at its layer and token cap
        cfg = (p.features if p else r.features).get(f, {})
        for field, opt in ENCODER_OPTIONS.items():
            if field in cfg:
                take(opt, cfg[field])
    opts = {k: str(v) for k, v in r.model.items()}
    for k, v in (values.get("options") or {}).items():
        if k in opts and opts[k] != v:
            overrides[f"set {k}"] = {"recipe": opts[k], "command line": v}
        opts[k] = v
    out["options"] = opts
    record = {"name": r.name, "file": r.path, "paper": r.paper_record(), "overrides": overrides,
              "substitutions": p.substitutions if p else [], "differs": r.differs}
    store_cfgs = {f: match_config(f, c) for f, c in p.features.items()} if p else {}
    return out, record, store_cfgs
