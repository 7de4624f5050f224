"""Recipes, extraction side: what a recipe extracts here (after command-line overrides),
what is missing on this machine, and its substitutes (``mer extract --recipe``).

Reading recipe files is ``mer.common.recipes``; training from one is ``mer.train.recipes``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from mer.common.errors import MerError
from mer.common.recipes import Recipe


def missing_reason(feature: str, cfg: dict) -> str | None:
    """Why the recipe's setting of ``feature`` cannot run here (an encoder or file that is
    not installed), or None. Each extractor answers for itself (``Extractor.missing``), so a
    new one needs no edit here."""
    from mer.extract.base import EXTRACTORS, make_config

    cls = EXTRACTORS.get(feature)
    return cls.missing(make_config(cls, cfg))


@dataclass
class Plan:
    """What a recipe runs here: features (after CLI overrides and substitutions) and inputs."""

    features: dict[str, dict]
    inputs: str
    substitutions: list[dict]


def plan(recipe: Recipe, overrides: dict[str, dict] | None = None, substitute: bool = False) -> Plan:
    """The recipe's features with ``overrides`` (feature -> {field: value} from the command
    line) applied; a missing encoder is an error, or with ``substitute`` replaced by the
    recipe's ``substitute`` entry for that feature (recorded)."""
    feats = {f: {**c, **(overrides or {}).get(f, {})} for f, c in recipe.features.items()}
    inputs = recipe.inputs
    subs: list[dict] = []
    out: dict[str, dict] = {}
    for f, cfg in feats.items():
        why = missing_reason(f, cfg)
        if why is None:
            out[f] = cfg
            continue
        if not substitute:
            raise MerError(f"recipe {recipe.name}: {f} {why}; or run with --substitute to use the packaged "
                           f"{_sub_text(recipe, f)} (the results are then not the paper's)")
        s = recipe.substitute.get(f)
        if s is None:
            raise MerError(f"recipe {recipe.name}: {f} {why} (and the recipe names no substitute for it)")
        new = s.get("feature", f)
        new_cfg = {k: v for k, v in cfg.items() if new == f and k not in (s.get("drop") or [])}
        new_cfg.update(s.get("config") or {})
        out[new] = new_cfg
        if new != f:
            inputs = rename_input(inputs, f, new)
        subs.append({"feature": f, "wanted": cfg, "used_feature": new, "used": new_cfg, "why": why})
    return Plan(out, inputs, subs)


def rename_input(inputs: str, old: str, new: str) -> str:
    """``inputs`` with feature ``old`` replaced by ``new`` (its default output: the old
    feature's output names need not exist in the substitute)."""
    return ",".join("+".join(new if p.split(".")[0] == old else p for p in part.split("+")) for part in inputs.split(","))


def _sub_text(recipe: Recipe, f: str) -> str:
    s = recipe.substitute.get(f) or {}
    if s.get("feature") and s["feature"] != f:
        return f"{s['feature']} features instead"
    return ", ".join(f"{k}={v}" for k, v in (s.get("config") or {}).items()) or "default"


def match_config(feature: str, cfg: dict) -> dict:
    """The typed config fields a store of ``feature`` must have to be the recipe's."""
    from mer.common.config import make_config
    from mer.extract.base import EXTRACTORS

    full = make_config(EXTRACTORS.get(feature).Config, cfg, owner=f"extractor {feature}", option=f"--{feature}.{{}}")
    return json.loads(json.dumps({k: getattr(full, k) for k in cfg}, default=str))
