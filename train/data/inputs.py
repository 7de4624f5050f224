"""Requests -> model inputs (``InputSpec``s), dimensions from each store's metadata."""
from __future__ import annotations

from mer.common.errors import UsageError
from mer.train.data.joins import combined_set
from mer.train.data.requests import MEAN_SUFFIX, FeatureRequest
from mer.train.data.stores import FeatureCache, default_outputs
from mer.train.fusion import DEFAULT_WANTS, InputSpec, check_wants

# The one input vocabulary: the spec a model is built from is the spec the data layer fills
# (``InputSource`` is its old name, kept for callers).
InputSource = InputSpec

def resolve_inputs(requests: list[FeatureRequest], cache: FeatureCache, wants: str = DEFAULT_WANTS) -> list[InputSpec]:
    """Turn ``--features`` requests into model inputs, dimensions from store metadata."""
    check_wants(wants)
    out: list[InputSpec] = []
    for r in requests:
        fs = combined_set(r, cache, wants) if r.parts else cache.get(r.feature)
        if r.output is not None:
            name = r.output
            pool = False
            if name.endswith(MEAN_SUFFIX):
                name, pool = name[: -len(MEAN_SUFFIX)], True
            if name not in fs.outputs:
                raise UsageError(
                    f"--features {r.text}: store {fs.where} has no output {name!r} (it has: {', '.join(fs.outputs)})"
                )
            pairs = [(name, pool)]
        else:
            pairs = default_outputs(fs, wants)
        for name, pool in pairs:
            meta = fs.outputs[name]
            kind = "fixed" if pool else meta["kind"]
            key = f"{fs.feature}.{name}" + (MEAN_SUFFIX if pool else "")
            if pool and meta["kind"] != "ragged":
                raise UsageError(f"--features {r.text}: {name!r} is already a fixed vector; drop {MEAN_SUFFIX}")
            layers = int(meta.get("layers") or 1)
            out.append(InputSpec(key, kind, int(meta["dim"]) // layers, fs.modality, layers, fs.feature, name, pool))
    keys = [s.key for s in out]
    if len(set(keys)) != len(keys):
        raise UsageError(f"--features names the same input twice: {', '.join(keys)}")
    return out



def input_specs(sources: list[InputSpec]) -> list[InputSpec]:
    """The specs a model is built from: the inputs themselves (one vocabulary)."""
    return list(sources)
