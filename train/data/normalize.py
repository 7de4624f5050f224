"""Per-fold z-scoring, fitted on training rows only."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mer.train.data.alignment import TrainData

@dataclass
class Normalizer:
    """Per-input z-scoring; statistics fitted on training rows only (per fold)."""

    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    eps: float = 1e-6

    @classmethod
    def fit(cls, data: TrainData, rows: np.ndarray) -> "Normalizer":
        stats = {}
        for key, a in data.arrays.items():
            if a.raw:   # identity statistics: token ids must reach the encoder unchanged
                d = (a.fixed if a.kind == "fixed" else a.values).shape[1]
                stats[key] = (np.zeros(d, np.float32), np.ones(d, np.float32))
                continue
            if a.kind == "fixed":
                x = np.asarray(a.fixed[rows], np.float64)
                mean, var = x.mean(0), x.var(0)
            else:  # every frame of every training utterance, accumulated in one pass
                d = a.values.shape[1]
                s1, s2, n = np.zeros(d), np.zeros(d), 0
                for r in rows:
                    seg = np.asarray(a.values[a.offsets[r] : a.offsets[r + 1]], np.float64)
                    s1 += seg.sum(0)
                    s2 += (seg * seg).sum(0)
                    n += len(seg)
                mean = s1 / max(n, 1)
                var = np.maximum(s2 / max(n, 1) - mean * mean, 0.0)
            std = np.sqrt(var)
            # Constant dimensions stay constant (0) instead of being blown up by 1/eps.
            std = np.where(std < 1e-8, 1.0, std)
            stats[key] = (mean.astype(np.float32), std.astype(np.float32))
        return cls(stats)

    def apply_np(self, key: str, x: np.ndarray) -> np.ndarray:
        mean, std = self.stats[key]
        return ((np.asarray(x, np.float32) - mean) / std).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {}
        for k, (m, s) in self.stats.items():
            out[f"norm/{k}/mean"] = m
            out[f"norm/{k}/std"] = s
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray]) -> "Normalizer":
        stats: dict[str, list] = {}
        for name, v in t.items():
            if name.startswith("norm/"):
                key, which = name[5:].rsplit("/", 1)
                stats.setdefault(key, [None, None])[0 if which == "mean" else 1] = np.asarray(v, np.float32)
        return cls({k: (m, s) for k, (m, s) in stats.items()})

