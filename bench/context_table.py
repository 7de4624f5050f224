"""The README's context table: conversation-level (`--context dialog`) vs utterance-level
training of the same model, leave-one-session-out, on dialogues whose emotion depends on
context (mer.train.synthetic_features.synthetic_dialogues: emotion persists over stretches,
40% of emotional turns look neutral in both modalities and keep their label).

    python bench/context_table.py [--epochs 15] [--dialogs 12]

Synthetic features only: the figures show that the context models read the dialogue, not
how much context helps on a real corpus.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--dialogs", type=int, default=12, help="dialogues per session (5 sessions)")
    a = ap.parse_args()

    from mer.train.synthetic_features import synthetic_dialogues
    from mer.train.trainer import TrainConfig, run_train

    man, sets = synthetic_dialogues(dialogs_per_session=a.dialogs, seed=0)
    print(f"{len(man.df)} utterances in {man.df['dialog'].nunique()} dialogues", flush=True)
    lines = ["| fusion | context | UA (mean ± std, 5 folds) | WA | weighted F1 |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as out:
        for fusion in ("attention", "cross"):
            for ctx, bs in (("none", 32), ("dialog", 4)):
                t = time.time()
                tc = TrainConfig(epochs=a.epochs, patience=5, batch_size=bs, lr=3e-3, context=ctx)
                (r,) = run_train("iemocap", "bert.mean,mfcc.pooled", fusion, protocol="loso", manifest=man,
                                 feature_sets=sets, out=out, config=tc, device="cpu", plots=False, quiet=True)
                mm = json.loads((r / "metrics.json").read_text())
                mean, std = mm["mean"], mm["std"]
                lines.append(f"| `{fusion}` | `{ctx}` | {mean['ua']:.3f} ± {std['ua']:.3f} | {mean['accuracy']:.3f} "
                             f"| {mean['weighted_f1']:.3f} |")
                print(lines[-1], f"({time.time() - t:.0f} s)", flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
