"""Conversation-level training (``mer train --context dialog``): batches of whole dialogues.

``--batch-size`` counts utterances here too, as the papers mean it (seeds 002 and 004 train
"batches of 32" utterances): whole dialogues are packed into batches of about ``batch_size``
utterances (``pack_dialogs``); a dialogue longer than ``batch_size`` is a batch on its own.

Seeds 002 and 004 model emotion in conversation: their recurrent and attention layers run
over the utterances of a dialogue. This module groups the rows of a fold's split into
dialogues, in temporal order, and builds batches of whole dialogues on top of the
utterance-level batcher of ``mer.train.data``:

- the utterances of a batch are the real utterances of its dialogues, flattened dialogue by
  dialogue in temporal order; every within-utterance input (vectors, frame or token
  sequences) is batched exactly as in utterance-level training;
- ``batch[DIALOG_MASK]`` is a ``[D, U]`` bool tensor (D dialogues, U the longest), True on
  real utterances; utterance ``i`` of the flat order is the ``i``-th True entry in row-major
  order, so ``H = zeros(D, U, d); H[mask] = h`` lays utterance vectors out as dialogues
  (``mer.train.layers.to_dialogs``) and ``H[mask]`` takes them back;
- a model returns one output row per real utterance, so losses, metrics, predictions and
  confusion matrices stay per utterance.

Temporal order within a dialogue (the manifest's ``dialog`` column): by ``start`` when every
utterance of the dialogue has one (spans in one recording), else by the utterance index in
the id (MELD's ``dia3_utt7``), else manifest order (the IEMOCAP adapter writes each
dialogue's rows sorted by their time in the dialogue). Rows without a dialogue id are
dialogues of one utterance.
"""
from __future__ import annotations

import re

import numpy as np

DIALOG_MASK = "dialog.mask"
_UTT_INDEX = re.compile(r"utt(\d+)$")


def dialog_order(meta) -> tuple[np.ndarray, np.ndarray]:
    """``(dialogue code per row, rank of the row inside its dialogue)`` for the rows of
    ``meta`` (the training data's manifest rows, in data order)."""
    import pandas as pd

    n = len(meta)
    if "dialog" in meta.columns and meta["dialog"].notna().any():
        d = meta["dialog"].astype("string")
        missing = d.isna().to_numpy()
        labels = d.fillna("").to_numpy().astype(object)
        labels[missing] = [f"\0row{i}" for i in np.flatnonzero(missing)]
    else:
        labels = np.array([f"\0row{i}" for i in range(n)], object)
    codes, uniq = pd.factorize(pd.Series(labels.astype(str)))
    start = meta["start"].to_numpy(np.float64) if "start" in meta.columns else np.full(n, np.nan)
    ids = meta["id"].astype(str).to_numpy() if "id" in meta.columns else np.array([""] * n)
    utt = np.array([float(m.group(1)) if (m := _UTT_INDEX.search(i)) else np.nan for i in ids])
    rank = np.zeros(n, np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for grp in np.split(order, bounds):
        if not len(grp):
            continue
        if not np.isnan(start[grp]).any():
            key = start[grp]
        elif not np.isnan(utt[grp]).any():
            key = utt[grp]
        else:
            key = grp.astype(np.float64)   # manifest order
        rank[grp[np.lexsort((grp, key))]] = np.arange(len(grp))
    return codes.astype(np.int64), rank


def group_dialogs(rows: np.ndarray, codes: np.ndarray, rank: np.ndarray) -> list[np.ndarray]:
    """``rows`` grouped by dialogue, each in temporal order (dialogues in order of first row)."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
        return []
    c = codes[rows]
    order = np.lexsort((rank[rows], c))           # by dialogue, then by time
    rs, cs = rows[order], c[order]
    cut = np.flatnonzero(np.diff(cs)) + 1
    parts = np.split(rs, cut)
    first: dict[int, int] = {}
    for i, x in enumerate(c.tolist()):
        first.setdefault(x, i)
    return [parts[k] for k in np.argsort([first[int(x)] for x in cs[np.r_[0, cut]]], kind="stable")]


def pack_dialogs(dialogs: list[np.ndarray], batch_size: int) -> list[list[np.ndarray]]:
    """Consecutive dialogues packed into batches of about ``batch_size`` utterances.

    A dialogue joins the open batch when that brings the batch's utterance count nearer to
    ``batch_size`` than closing it would (``n + len/2 <= batch_size``), so batches hold
    ``batch_size`` utterances give or take half a dialogue, never cut a dialogue, and a
    dialogue longer than ``batch_size`` is a batch of its own. Counting dialogues instead
    made "batches of 32" hold 32 dialogues (~300 MELD utterances): about ten times fewer
    optimizer steps than the papers took."""
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: must be at least 1")
    out: list[list[np.ndarray]] = []
    cur: list[np.ndarray] = []
    n = 0
    for d in dialogs:
        if cur and (n + len(d) / 2 > batch_size or len(d) > batch_size):
            out.append(cur)
            cur, n = [], 0
        cur.append(d)
        n += len(d)
        if n >= batch_size:
            out.append(cur)
            cur, n = [], 0
    if cur:
        out.append(cur)
    return out


class DialogBatcher:
    """Batches of whole dialogues over an utterance-level batcher (anything with
    ``batch(rows) -> (inputs dict, y)`` and a ``device``). ``batch_size`` counts utterances:
    each batch holds whole dialogues, about ``batch_size`` utterances (``pack_dialogs``)."""

    def __init__(self, batcher, meta):
        self.inner = batcher
        self.device = getattr(batcher, "device", "cpu")
        self.codes, self.rank = dialog_order(meta)

    def dialogs(self, rows) -> list[np.ndarray]:
        return group_dialogs(rows, self.codes, self.rank)

    def batch_dialogs(self, dialogs: list[np.ndarray]):
        """(flat rows, inputs with DIALOG_MASK, y) for these dialogues."""
        import torch

        flat = np.concatenate(dialogs) if dialogs else np.zeros(0, np.int64)
        b, y = self.inner.batch(flat)
        U = max(len(d) for d in dialogs)
        mask = np.zeros((len(dialogs), U), bool)
        for i, d in enumerate(dialogs):
            mask[i, : len(d)] = True
        b = dict(b)
        b[DIALOG_MASK] = torch.from_numpy(mask).to(self.device)
        return flat, b, y

    def order(self, rows, batch_size: int, shuffle: bool = False,
              rng: np.random.Generator | None = None) -> list[list[np.ndarray]]:
        """The batches of one pass: lists of dialogues (row arrays in time order), dialogues
        shuffled first when ``shuffle``."""
        dl = self.dialogs(rows)
        if shuffle:
            dl = [dl[i] for i in (rng or np.random.default_rng()).permutation(len(dl))]
        return pack_dialogs(dl, batch_size)

    def iterate(self, rows, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None):
        for group in self.order(rows, batch_size, shuffle, rng):
            yield self.batch_dialogs(group)


def dialog_lengths(meta, rows=None) -> np.ndarray:
    """Utterances per dialogue among ``rows`` (all rows by default), for reports."""
    codes, rank = dialog_order(meta)
    rows = np.arange(len(meta)) if rows is None else rows
    return np.array([len(d) for d in group_dialogs(rows, codes, rank)])
