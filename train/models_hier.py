"""Hierarchical speech emotion recognition with text re-classification (seed 003).

Alqurashi, Li, Sidorov (IJCNN 2024), "Improving Speech Emotion Recognition through
Hierarchical Classification and Text Integration", section II and III.C (Algorithm 1).

Three heads, trained jointly here (the paper trains three separate models; the sum of
their losses has the same minimiser because the heads share no parameters):
- Model 1 (speech, level 1): neutral vs emotional, trained on all samples;
- Model 2 (speech, level 2): among the emotions only, trained on the emotional samples only
  (neutral is left out on purpose: its ambiguity would blur the emotion classes);
- Model 3 (text, level 2): all classes, neutral included, trained on all samples.
Each is "LSTMs followed by two fully connected layers": every ragged input of the
modality runs through an LSTM over its real frames (``layers.MaskedRNN``; last hidden state), fixed inputs (e.g. a
39-d MFCC mean, GeMAPS functionals) enter as they are, and the concatenation goes through
two FC layers. Models 1 and 2 have separate speech encoders, as in the paper.

Prediction (section II.A.2 and the consistency/confidence algorithm of III.C): speech
Model 1 routes every utterance. Routed "emotional": Model 2 picks the emotion. Routed
"neutral": the text Model 3 re-classifies it, moderated by the threshold tau on the text
model's neutral probability: if ``p_text(neutral) >= tau`` the text is consistent enough
with speech and the answer stays neutral; otherwise the text model's class is the answer.
The paper tries tau in {0.25, 0.30, 0.35, 0.40}; the value it finds best per model is in
its Table II, which our copy of the paper does not contain, so the default 0.30 is a value
inside the paper's range.

``threshold=auto`` (``--set threshold=auto``) is the honest form of "ascertain an optimal
threshold": after training, ``calibrate`` (called by the trainer with the fold's
*validation* logits and labels, never the test fold's) picks the tau of ``auto_thresholds``
(the paper's four values) with the best validation UA (ties: higher WA, then the smaller
tau); the choice is stored in the model (buffer ``chosen_threshold``, so saved weights and
``mer predict`` use it) and reported per fold in metrics.json (``threshold``). Until then
(early stopping during training) the decision uses the middle of that grid. ``sweep``
reports UA/WA for 0.20..0.50 on the test fold (plus speech-only and text-always rows, the
paper's baseline and unthresholded system): analysis only, since picking tau there would
tune on the test data.

Interface note: ``forward`` returns the three heads' logits packed side by side,
``[B, 2 + (C-1) + C]`` (``self.n_logits`` columns), because ``loss``, ``predict_proba`` and
``sweep`` each need all three; ``predict_proba`` turns them into ``[B, C]`` class
probabilities whose argmax is the hierarchical decision.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from mer.common.errors import MerError
from mer.train.fusion import FUSIONS, by_modality
from mer.train.layers import FusionBase, balanced_weights, MaskedRNN, check_dims, get_mask, mlp, require_modalities

NEUTRAL_NAMES = ("neu", "neutral")


class _Branch(nn.Module):
    """"LSTMs followed by two fully connected layers" over all inputs of one modality."""

    def __init__(self, specs, n_out: int, hidden: int, fc: int, bidirectional: bool, dropout: float):
        super().__init__()
        self.specs = specs
        self.rnns = nn.ModuleDict()
        d = 0
        for i, s in enumerate(specs):
            if s.kind == "ragged":
                rnn = MaskedRNN(s.dim, hidden, cell="lstm", bidirectional=bidirectional)
                self.rnns[str(i)] = rnn
                d += rnn.out_dim
            else:
                d += s.dim
        self.drop = nn.Dropout(dropout)
        self.head = mlp(d, fc, n_out, dropout)

    def forward(self, batch):
        parts = []
        for i, s in enumerate(self.specs):
            x = batch[s.key]
            if s.kind == "ragged":
                _, last = self.rnns[str(i)](x, get_mask(batch, s.key, x), s.key)
                parts.append(last)
            else:
                parts.append(x)
        return self.head(self.drop(torch.cat(parts, dim=-1)))


@FUSIONS.register("hierarchical")
class HierarchicalFusion(FusionBase):
    """Two-level speech hierarchy with a text re-classifier (seed 003); see the module docstring."""

    @dataclass
    class Config:
        classes: list[str] | None = None   # class names in label order; must contain neu/neutral
        threshold: float | str = 0.30      # tau on p_text(neutral); paper's range 0.25-0.40; "auto": chosen on validation
        hidden: int = 128                  # LSTM size (paper: chosen by Optuna, not reported)
        fc: int = 128                      # first of the two FC layers
        bidirectional: bool = False        # the paper says LSTM
        dropout: float = 0.3
        sweep_thresholds: list[float] = field(
            default_factory=lambda: [0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50])
        auto_thresholds: list[float] = field(default_factory=lambda: [0.25, 0.30, 0.35, 0.40])  # threshold=auto candidates (the paper's)

    wants = "sequence"

    @classmethod
    def check_inputs(cls, inputs) -> None:
        require_modalities("hierarchical", inputs, audio=1, text=1)

    def __init__(self, inputs, n_out: int, config=None, classes: list[str] | None = None):
        super().__init__(inputs, n_out, config)
        c = self.config
        if classes is not None:
            if c.classes is not None and list(c.classes) != list(classes):
                raise MerError(f"hierarchical: classes {list(classes)} disagree with config.classes {list(c.classes)}")
            c = self.config = replace(c, classes=list(classes))
        if c.classes is None:
            raise MerError("hierarchical: the class names are needed (to find the neutral class); "
                           "pass classes=[...] or config.classes")
        if len(c.classes) != n_out:
            raise MerError(f"hierarchical: {len(c.classes)} class names {list(c.classes)} but n_out = {n_out}")
        low = [str(x).lower() for x in c.classes]
        hits = [i for i, x in enumerate(low) if x in NEUTRAL_NAMES]
        if len(hits) != 1:
            raise MerError(f"hierarchical: needs exactly one neutral class ('neu' or 'neutral') among {list(c.classes)}")
        if n_out < 3:
            raise MerError(f"hierarchical: needs neutral and at least two emotions, got classes {list(c.classes)}")
        self.auto = isinstance(c.threshold, str)
        if self.auto:
            if c.threshold != "auto" or not c.auto_thresholds or not all(0.0 <= t <= 1.0 for t in c.auto_thresholds):
                raise MerError(f"hierarchical: threshold must be a number in [0, 1] or 'auto' (with auto_thresholds in [0, 1]), "
                               f"got {c.threshold!r} / {list(c.auto_thresholds)}")
            grid = sorted(float(t) for t in c.auto_thresholds)
            # Saved with the weights: a reloaded fold model decides with the threshold chosen for it.
            self.register_buffer("chosen_threshold", torch.tensor(grid[(len(grid) - 1) // 2], dtype=torch.float64))
        elif not 0.0 <= c.threshold <= 1.0:
            raise MerError(f"hierarchical: threshold must be in [0, 1], got {c.threshold}")
        self.neutral = hits[0]
        C = n_out
        self.emotions = [i for i in range(C) if i != self.neutral]   # Model 2's classes, in label order
        self.n_logits = 2 + (C - 1) + C
        audio, text = by_modality(self.inputs, "audio"), by_modality(self.inputs, "text")
        mk = lambda specs, k: _Branch(specs, k, c.hidden, c.fc, c.bidirectional, c.dropout)  # noqa: E731
        self.speech_level1 = mk(audio, 2)       # [neutral, emotional]
        self.speech_level2 = mk(audio, C - 1)   # emotions only
        self.text_model = mk(text, C)           # all classes

    # ---------------------------------------------------------------- heads

    def forward(self, batch) -> torch.Tensor:
        check_dims(batch, self.inputs)
        return torch.cat([self.speech_level1(batch), self.speech_level2(batch), self.text_model(batch)], dim=-1)

    def split(self, logits: torch.Tensor):
        C = self.n_out
        if logits.shape[-1] != self.n_logits:
            raise MerError(f"hierarchical: expected {self.n_logits} packed logits, got {logits.shape[-1]}")
        return logits[:, :2], logits[:, 2:C + 1], logits[:, C + 1:]

    def loss(self, logits: torch.Tensor, y: torch.Tensor, class_counts=None) -> torch.Tensor:
        """Sum of the three heads' cross-entropies. ``class_counts`` (training rows per class,
        given with ``--balanced``) weights each head by its own classes: neutral vs emotional
        for Model 1, the emotions for Model 2, all classes for Model 3."""
        l1, l2, l3 = self.split(logits)
        y = y.long()
        emotional = y != self.neutral
        w1 = w2 = w3 = None
        if class_counts is not None:
            import numpy as np

            c = np.asarray(class_counts, np.float64)
            t = lambda w: torch.tensor(w, dtype=logits.dtype, device=logits.device)  # noqa: E731
            w1 = t(balanced_weights([c[self.neutral], c[self.emotions].sum()]))
            w2 = t(balanced_weights(c[self.emotions]))
            w3 = t(balanced_weights(c))
        loss = F.cross_entropy(l1, emotional.long(), weight=w1) + F.cross_entropy(l3, y, weight=w3)
        if emotional.any():
            # class index among the emotions: labels above neutral shift down by one
            ye = y[emotional] - (y[emotional] > self.neutral).long()
            loss = loss + F.cross_entropy(l2[emotional], ye, weight=w2)
        return loss

    # ---------------------------------------------------------------- decision

    def decide(self, logits: torch.Tensor, threshold: float | None = None, mode: str = "threshold"):
        """``(proba [B, C], pred [B])`` of the hierarchical decision.

        ``mode``: "threshold" (Algorithm 1 with ``threshold``), "speech_only" (level-1
        neutral stays neutral: the paper's speech baseline), "text_always" (the text model
        re-classifies every speech-neutral utterance: the unthresholded system).
        """
        if threshold is None:
            threshold = float(self.chosen_threshold) if self.auto else self.config.threshold
        tau = threshold
        l1, l2, l3 = self.split(logits)
        p1, p2, p3 = l1.softmax(-1), l2.softmax(-1), l3.softmax(-1)
        C, neu = self.n_out, self.neutral
        routed_neutral = p1[:, 0] >= p1[:, 1]
        if mode == "speech_only":
            keep_neutral = routed_neutral
        elif mode == "text_always":
            keep_neutral = torch.zeros_like(routed_neutral)
        elif mode == "threshold":
            keep_neutral = routed_neutral & (p3[:, neu] >= tau)
        else:
            raise MerError(f"hierarchical: unknown decision mode {mode!r}")
        emo_idx = torch.tensor(self.emotions, device=logits.device)
        # routed emotional: Model 2's distribution over the emotions (neutral 0)
        p_emo = torch.zeros(len(p1), C, dtype=p1.dtype, device=p1.device).index_copy(1, emo_idx, p2)
        # kept neutral: neutral gets the speech model's confidence (>= 0.5, so it is the
        # argmax); the rest is shared in the text model's proportions among the emotions
        rest = p3.index_select(1, emo_idx)
        rest = rest / rest.sum(-1, keepdim=True).clamp(min=1e-12)
        p_keep = torch.zeros_like(p_emo).index_copy(1, emo_idx, rest * p1[:, 1:2])
        p_keep[:, neu] = p1[:, 0]
        proba = torch.where(routed_neutral[:, None], torch.where(keep_neutral[:, None], p_keep, p3), p_emo)
        return proba, proba.argmax(-1)

    def predict_proba(self, logits: torch.Tensor) -> torch.Tensor:
        return self.decide(logits)[0]

    def calibrate(self, logits: torch.Tensor, y: torch.Tensor) -> dict:
        """``threshold=auto``: choose tau on the given (validation) logits and labels.

        Returns what the trainer reports for the fold (``{"threshold": tau}``); {} when the
        threshold is fixed."""
        if not self.auto:
            return {}
        from sklearn.metrics import accuracy_score, balanced_accuracy_score

        y_np = torch.as_tensor(y).long().cpu().numpy()
        best = None
        with torch.no_grad():
            for tau in sorted(float(t) for t in self.config.auto_thresholds):
                p = self.decide(logits.detach(), tau)[1].cpu().numpy()
                score = (balanced_accuracy_score(y_np, p), accuracy_score(y_np, p), -tau)
                if best is None or score > best[0]:
                    best = (score, tau)
        self.chosen_threshold.fill_(best[1])
        return {"threshold": best[1], "threshold_valid_ua": float(best[0][0])}

    def sweep(self, logits: torch.Tensor, y: torch.Tensor) -> list[dict]:
        """UA / WA (and neutral precision/recall) per threshold, plus the two reference systems."""
        from sklearn.metrics import accuracy_score, balanced_accuracy_score, precision_score, recall_score

        y_np = torch.as_tensor(y).long().cpu().numpy()
        rows = []
        settings = [("speech_only", None), ("text_always", None)] + [
            ("threshold", float(t)) for t in self.config.sweep_thresholds]
        with torch.no_grad():
            for mode, tau in settings:
                _, pred = self.decide(logits.detach(), tau, mode)
                p = pred.cpu().numpy()
                rows.append({
                    "sweep": "hierarchical_neutral_threshold",
                    "mode": mode,
                    "threshold": tau,
                    "UA": float(balanced_accuracy_score(y_np, p)),
                    "WA": float(accuracy_score(y_np, p)),
                    "neutral_precision": float(precision_score(y_np, p, labels=[self.neutral], average="macro", zero_division=0)),
                    "neutral_recall": float(recall_score(y_np, p, labels=[self.neutral], average="macro", zero_division=0)),
                })
        return rows
