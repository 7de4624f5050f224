"""``--features`` text -> requests: ``"bert,mfcc.frames,mfcc+egemaps"`` names stores, maybe
an output of each, and joins of several stores into one input (``mer.train.data.joins``)."""
from __future__ import annotations

from dataclasses import dataclass

from mer.common.errors import UsageError

# Suffix of an input derived by mean-pooling a ragged output (a store with no fixed output).
MEAN_SUFFIX = "@mean"
# Joins several stores into one input in --features: "bert,mfcc+egemaps".
JOIN = "+"


@dataclass(frozen=True)
class FeatureRequest:
    feature: str
    output: str | None = None   # None = the store's default for what the fusion wants
    # A combined input (``mfcc+egemaps``): the stores joined into one input; ``feature`` is
    # then the joined text, the name of the in-memory set that holds the join.
    parts: tuple["FeatureRequest", ...] = ()

    @property
    def text(self) -> str:
        return self.feature if self.output is None else f"{self.feature}.{self.output}"


def _parse_one(p: str, spec) -> FeatureRequest:
    feat, _, output = p.strip().partition(".")
    if not feat:
        raise UsageError(f"--features: empty feature name in {spec!r}")
    return FeatureRequest(feat, output or None)


def parse_features(spec: str | list[str] | tuple[str, ...]) -> list[FeatureRequest]:
    """``"bert,mfcc.frames"`` -> [FeatureRequest("bert"), FeatureRequest("mfcc", "frames")];
    ``"bert,mfcc+egemaps"`` -> bert and ONE input joining mfcc and egemaps (see
    ``combined_set``)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[FeatureRequest] = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        if JOIN in p:
            members = tuple(_parse_one(x, spec) for x in p.split(JOIN))
            if len(set(members)) != len(members):
                raise UsageError(f"--features: {p!r} joins the same input twice")
            r = FeatureRequest(JOIN.join(m.text for m in members), None, members)
        else:
            r = _parse_one(p, spec)
        if r in out:
            raise UsageError(f"--features: {r.text!r} is named twice in {spec!r}")
        out.append(r)
    if not out:
        raise UsageError("--features: no feature named")
    return out

