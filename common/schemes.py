"""Label schemes and protocols, read from ``manifests/<dataset>.yaml``.

A scheme turns the manifest's raw label columns into class labels; utterances a scheme does
not cover (IEMOCAP ``fru`` under ``emo4``, SLUE ``<mixed>``) get no label and are left out
of training under that scheme. Scheme kinds:

- ``map``: categorical ``source`` column through ``map`` (unmapped values excluded)
- ``identity``: every distinct value of ``source`` is a class (the csv adapter)
- ``bins``: continuous ``source`` cut at ``edges`` into ``classes``
- ``sign``: negative / zero / positive of ``source``
- ``round``: ``source`` rounded and clipped to ``range`` (MOSI Acc-5/Acc-7)
- ``regression``: ``source`` as a float target; or, with ``sources: [...]`` (and optional
  ``targets:`` names), several float targets at once (arousal, valence, dominance): the
  labels are then a DataFrame with one column per target, and a row missing any target
  has no label
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd
import yaml

from mer.common.errors import MerError


@lru_cache(maxsize=None)
def dataset_spec(dataset: str) -> dict:
    """The dataset's label schemes and protocols: ``manifests/<dataset>.yaml`` for the
    packaged corpora, else the ``spec`` its adapter registered (a plugin corpus)."""
    try:
        text = resources.files("mer.manifests").joinpath(f"{dataset}.yaml").read_text()
    except FileNotFoundError:
        from mer.common.datasets import DATASETS

        spec = DATASETS.get(dataset).spec if dataset in DATASETS else None
        if spec is None:
            raise MerError(f"no label schemes for dataset {dataset!r} (expected manifests/{dataset}.yaml, "
                           f"or spec= in its adapter's @register)") from None
        return spec
    return yaml.safe_load(text)


@dataclass
class Scheme:
    name: str
    kind: str
    source: str
    classes: list[str] = field(default_factory=list)
    spec: dict = field(default_factory=dict)

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def targets(self) -> list[str]:
        """The target names of a multi-target regression scheme; [] for any other scheme."""
        if self.kind != "regression" or not self.spec.get("sources"):
            return []
        return [str(t) for t in (self.spec.get("targets") or self.spec["sources"])]

    def apply(self, df: pd.DataFrame) -> tuple[pd.Series, list[str]]:
        """Return (labels, classes): labels are class names (or floats for regression),
        NA where the scheme does not cover the utterance. Multi-target regression:
        (DataFrame [n, targets], target names)."""
        col = df[self.source.split(",")[0]]
        s = self.spec
        if self.kind == "map":
            lab = col.map(lambda v: s["map"].get(v) if isinstance(v, str) else None)
            return lab.astype("string"), list(self.classes)
        if self.kind == "identity":
            classes = sorted(col.dropna().unique().tolist())
            return col.astype("string"), classes
        if self.targets:
            lo, hi = s.get("range", [-np.inf, np.inf])
            x = pd.DataFrame({t: pd.to_numeric(df[c], errors="coerce").astype(float).clip(lo, hi)
                              for t, c in zip(self.targets, s["sources"])}, index=df.index)
            x[x.isna().any(axis=1)] = np.nan   # one missing target: the row is unlabelled
            return x, list(self.targets)
        x = pd.to_numeric(col, errors="coerce").astype(float)
        if self.kind == "regression":
            lo, hi = s.get("range", [-np.inf, np.inf])
            return x.clip(lo, hi), []
        out = pd.Series(pd.NA, index=df.index, dtype="string")
        ok = x.notna()
        if self.kind == "bins":
            edges = s["edges"]
            if s.get("closed") == "middle" and len(edges) == 2:
                idx = np.where(x < edges[0], 0, np.where(x > edges[1], 2, 1))
            else:  # left-closed bins: [e_i, e_{i+1})
                idx = np.searchsorted(np.asarray(edges, float), x.to_numpy(), side="right")
            for v in s.get("drop_values", []):
                ok &= x != v
        elif self.kind == "sign":
            idx = (np.sign(x.fillna(0).to_numpy()) + 1).astype(int)
        elif self.kind == "round":
            lo, hi = s["range"]
            idx = (np.clip(np.round(x.fillna(0).to_numpy()), lo, hi) - lo).astype(int)
        else:
            raise MerError(f"scheme {self.name!r}: unknown kind {self.kind!r}")
        cls = np.asarray(self.classes, dtype=object)[np.asarray(idx, int)]
        out[ok] = cls[ok.to_numpy()]
        return out, list(self.classes)


    def unlabelled(self, df: pd.DataFrame, labels: pd.Series) -> dict[str, int]:
        """How many utterances this scheme leaves without a label, by raw ``source`` value
        (MELD ``emo6``: ``{"fear": n}``), for the training data report."""
        if isinstance(labels, pd.DataFrame):   # multi-target: counted by which target is missing
            miss = labels.isna().any(axis=1).to_numpy()
            return {"(a target missing)": int(miss.sum())} if miss.any() else {}
        miss = pd.Series(labels).isna().to_numpy()
        raw = df[self.source].astype("string").fillna("(missing)").to_numpy()[miss]
        values, counts = np.unique(raw.astype(str), return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}


def scheme(dataset: str, name: str | None = None) -> Scheme:
    spec = dataset_spec(dataset)
    name = name or spec["default_scheme"]
    try:
        s = spec["schemes"][name]
    except KeyError:
        raise MerError(
            f"dataset {dataset!r} has no label scheme {name!r}; choose one of: {', '.join(spec['schemes'])}"
        ) from None
    if "source" not in s and not s.get("sources"):
        raise MerError(f"dataset {dataset!r}, scheme {name!r}: no source (or sources) column named")
    # A multi-target scheme's source is its columns joined by commas (the run's config shows it).
    source = s.get("source") or ",".join(s["sources"])
    if s.get("targets") and len(s["targets"]) != len(s.get("sources") or []):
        raise MerError(f"dataset {dataset!r}, scheme {name!r}: {len(s['targets'])} targets for {len(s.get('sources') or [])} sources")
    return Scheme(name, s["kind"], source, list(s.get("classes", [])), s)


def protocol(dataset: str, name: str | None = None) -> dict:
    spec = dataset_spec(dataset)
    name = name or spec["default_protocol"]
    if name == "auto":
        return {"name": "auto", "kind": "auto"}
    try:
        return {"name": name, **spec["protocols"][name]}
    except KeyError:
        raise MerError(
            f"dataset {dataset!r} has no protocol {name!r}; choose one of: {', '.join(spec['protocols'])}"
        ) from None


def raw_labels(dataset: str) -> dict[str, list[str]]:
    return dataset_spec(dataset).get("raw_labels") or {}
