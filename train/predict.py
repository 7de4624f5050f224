"""`mer predict`: label probabilities for new audio/text with a trained run.

The run's config.yaml names, for every input, the extractor and the exact config its store
was built with; the same extractors are rebuilt from the registry with those configs and
run on the new input, normalised with each fold's training statistics, and every fold
model's probabilities are averaged (an ensemble of the k fold models; for regression, the
mean prediction). Loading a run reads YAML, JSON and safetensors only: nothing from the
run directory is executed.

A run trained with ``--context dialog`` predicts whole dialogues: the items' ``dialog``
values group them (a table's ``dialog`` column; items without one are dialogues of one
utterance), ordered in time as in training (``start``, else the utterance index in the id,
else table order), and every utterance gets its prediction in its dialogue's context.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, UsageError


@dataclass
class Item:
    id: str
    audio: str | None = None
    text: str | None = None
    start: float | None = None
    end: float | None = None
    dialog: str | None = None


def build_extractor(name: str, store: dict, device: str = "cpu"):
    """The extractor ``name`` with the config its store was built with."""
    from mer.extract.base import EXTRACTORS

    cls = EXTRACTORS.get(name)
    saved = dict(store.get("config") or {})
    known = {f.name for f in fields(cls.Config)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise MerError(f"feature {name!r}: the run's store config has fields {unknown} this version of the extractor lacks")
    ext = cls(cls.Config(**saved), device=device)
    saved_identity = (store.get("attrs") or {}).get("identity")
    if hasattr(ext, "setup"):
        ext.setup()
    if saved_identity:
        now = ext.identity()
        if now and now != saved_identity:
            # Different weights would give different features: refuse instead of guessing.
            raise MerError(f"feature {name!r}: the extractor here differs from the one the run was trained on "
                           f"(identity {now} != {saved_identity})")
    return ext


def extract_items(items: list[Item], cfg: dict, device: str = "cpu", batch_size: int = 16) -> list[dict[str, dict]]:
    """For each item: {feature: {output: array}} for the features the run uses, computed by
    the same worker code as `mer extract` (``mer.extract.worker.run_batch``: one decode per
    sample rate, the same audio and output checks); an item that `mer extract` would skip is
    an error naming it and the reason."""
    from mer.extract.worker import adopt, run_batch, unpack

    # A fine-tuned encoder's input is its tokenised text (``tuned_inputs``), not an extractor's output.
    feats = [f for f in cfg["stores"] if f not in (cfg.get("finetune") or {})]
    # A combined input (`mfcc+egemaps`) is rebuilt from its parts' extractors, joined the
    # way training joined them.
    joins = {f: (cfg["stores"][f].get("attrs") or {}).get("combined") for f in feats}
    parts = {p["feature"]: p for j in joins.values() if j for out in j.values() for p in out["parts"]}
    plain = [f for f in feats if not joins[f]]
    specs = []
    for feat in dict.fromkeys(plain + list(parts)):
        store = cfg["stores"].get(feat) or parts[feat]
        ext = build_extractor(feat, store, device)
        modality = getattr(ext, "modality", store.get("modality"))
        for it in items:
            if modality == "audio" and not it.audio:
                raise UsageError(f"{it.id}: the run uses audio feature {feat!r}; give --audio")
            if modality == "text" and (it.text is None or not str(it.text).strip()):
                raise UsageError(f"{it.id}: the run uses text feature {feat!r}; give --text")
        outs = {k: {"kind": o.kind, "dim": int(o.dim), "frame_rate": o.frame_rate,
                    "dtype": "float32" if np.dtype(o.dtype).kind == "f" else o.dtype} for k, o in ext.outputs().items()}
        specs.append({"feature": feat, "module": type(ext).__module__, "class": type(ext).__qualname__,
                      "config": ext.config.to_dict(), "device": ext.device, "dtype": "float32", "outputs": outs,
                      "sample_rate": getattr(ext, "sample_rate", None), "modality": modality, "identity": ext.identity()})
        adopt(specs[-1], ext)
    out: list[dict[str, dict]] = [{} for _ in items]
    for a in range(0, len(items), batch_size):
        chunk = items[a : a + batch_size]
        rows = [{"id": it.id, "audio": it.audio, "start": it.start, "end": it.end, "duration": None, "text": it.text}
                for it in chunk]
        res = run_batch(rows, specs, max_seconds=float("inf"))
        for sp in specs:
            part = res[sp["feature"]]
            for i, reason, detail in list(part["skips"]) + list(part["failures"]):
                it = chunk[i]
                raise MerError(f"{it.id} ({it.audio or 'text'}): {sp['feature']}: {reason}" + (f" ({detail})" if detail else ""))
            for i, o in unpack(part, sp["outputs"]).items():
                out[a + i][sp["feature"]] = o
    for feat, join in joins.items():
        if join:
            for it, o in zip(items, out):
                o[feat] = {name: _join_one(it.id, o, spec) for name, spec in join.items()}
    return out


def _join_one(uid: str, outputs: dict[str, dict], spec: dict) -> np.ndarray:
    """One utterance's combined input from its parts' fresh outputs (as in training)."""
    from mer.train.data import join_frames, join_vectors

    arrs = []
    for p in spec["parts"]:
        x = outputs[p["feature"]].get(p["output"])
        if x is None:
            raise MerError(f"{uid}: extractor {p['feature']!r} gave no output {p['output']!r}")
        arrs.append(np.asarray(x, np.float32).mean(0) if p["pooled_here"] else x)
    if "repeats" not in spec:
        return join_vectors(arrs)
    x, _ = join_frames(arrs, spec["repeats"])
    if len(x) == 0:
        raise MerError(f"{uid}: the joined frame sequence is empty")
    return x


def _outputs(model, logits, regression: bool) -> np.ndarray:
    import torch

    if regression:
        return logits.squeeze(-1).cpu().numpy()
    p = model.predict_proba(logits) if hasattr(model, "predict_proba") else torch.softmax(logits, -1)
    return p.cpu().numpy()


def predict_dialogs(items: list[Item], feats, cfg: dict, sources, models, device="cpu", batch: int = 16) -> np.ndarray:
    """Outputs for a context model (``--context dialog``): items grouped into dialogues."""
    import pandas as pd
    import torch

    from mer.train.data import outputs_batch
    from mer.train.dialog import DIALOG_MASK, dialog_order, group_dialogs

    meta = pd.DataFrame({"id": [i.id for i in items], "dialog": pd.array([i.dialog for i in items], dtype="string"),
                         "start": [np.nan if i.start is None else i.start for i in items]})
    dialogs = group_dialogs(np.arange(len(items)), *dialog_order(meta))
    result = None
    for model, norm in models:
        out = None
        for a in range(0, len(dialogs), batch):
            dl = dialogs[a : a + batch]
            flat = np.concatenate(dl)
            b = outputs_batch([feats[i] for i in flat], sources, norm, device, [items[i].id for i in flat])
            mask = np.zeros((len(dl), max(len(d) for d in dl)), bool)
            for k, d in enumerate(dl):
                mask[k, : len(d)] = True
            b[DIALOG_MASK] = torch.from_numpy(mask).to(device)
            with torch.no_grad():
                o = _outputs(model, model(b), bool(cfg.get("regression")))
            out = np.zeros((len(items),) + o.shape[1:], o.dtype) if out is None else out
            out[flat] = o
        result = out if result is None else result + out
    return result / len(models)


def predict_items(run, items: list[Item], device: str = "auto") -> tuple[list[str], np.ndarray, dict]:
    """(classes, probabilities [N, C] or predictions [N], run config)."""
    import torch

    from mer.train.data import outputs_batch
    from mer.train.rundir import load_models
    from mer.common.device import choose

    dev = choose(device)
    cfg, sources, models = load_models(run, dev)
    feats = extract_items(items, cfg, dev)
    sources = tuned_inputs(run, cfg, sources, items, feats)
    if (cfg.get("train") or {}).get("context", "none") == "dialog":
        return list(cfg.get("classes") or []), predict_dialogs(items, feats, cfg, sources, models, dev), cfg
    rows = []
    for it, f in zip(items, feats):
        acc = []
        for model, norm in models:
            batch = outputs_batch([f], sources, norm, dev, [it.id])
            with torch.no_grad():
                logits = model(batch)
                if cfg.get("regression"):
                    acc.append(logits.squeeze(-1).cpu().numpy())
                else:
                    p = model.predict_proba(logits) if hasattr(model, "predict_proba") else torch.softmax(logits, -1)
                    acc.append(p.cpu().numpy())
        rows.append(np.mean(acc, axis=0)[0])
    return list(cfg.get("classes") or []), np.asarray(rows), cfg


def tuned_inputs(run, cfg: dict, sources, items: list[Item], feats: list[dict]):
    """For a fine-tuned run: each item's token ids go into ``feats`` and the fine-tuned inputs'
    specs become the token-id specs the batches were built from in training."""
    tuned = cfg.get("finetune") or {}
    if not tuned:
        return sources
    from mer.train.finetune import data_spec, decode_saved, tokenize_saved

    for feat, rec in tuned.items():
        if rec.get("modality") == "audio":
            for f, x in zip(feats, decode_saved(rec, items)):
                f[feat] = {"samples": x}
            continue
        ids = tokenize_saved(run, rec, [it.text for it in items], [it.id for it in items])
        for f, x in zip(feats, ids):
            f[feat] = {"token_ids": x}
    return [data_spec(s) if s.feature in tuned else s for s in sources]


def items_from_table(path) -> list[Item]:
    """Items from a manifest (.parquet) or a CSV/TSV/JSONL with columns audio|path, text, id, start, end."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise UsageError(f"--manifest {p}: no such file")
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    elif p.suffix in (".jsonl", ".json"):
        df = pd.read_json(p, lines=p.suffix == ".jsonl")
    else:
        df = pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",")
    audio_col = "audio" if "audio" in df.columns else ("path" if "path" in df.columns else None)
    if audio_col is None and "text" not in df.columns:
        raise UsageError(f"--manifest {p}: needs an audio (or path) column and/or a text column")
    items = []
    for i, r in enumerate(df.to_dict("records")):
        audio = r.get(audio_col) if audio_col else None
        if audio is not None and isinstance(audio, str) and not Path(audio).is_absolute():
            audio = str((p.parent / audio).resolve())  # relative paths are relative to the table, like the csv adapter
        def num(v):
            return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
        text = r.get("text")
        dialog = r.get("dialog")
        items.append(Item(str(r.get("id") if r.get("id") is not None else i), audio if isinstance(audio, str) else None,
                          text if isinstance(text, str) else None, num(r.get("start")), num(r.get("end")),
                          str(dialog) if isinstance(dialog, str) or isinstance(dialog, (int, np.integer)) else None))
    return items
