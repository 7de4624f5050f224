"""`mer demo`: synthesize a corpus, then prepare, extract and train on it, end to end.

Nothing is downloaded: the speech comes from espeak-ng (``mer.common.synth``), the text
encoder is the packaged all-MiniLM-L6-v2. Everything the demo writes stays under the cache:

    <cache>/demo-corpus/          the synthetic IEMOCAP-layout corpus (+ synth_info.json)
    <cache>/demo/iemocap/...      its manifest, report and feature stores
    <cache>/demo/runs/...         the trained runs

The demo keeps its own cache root (``<cache>/demo``) so that its synthetic "iemocap"
manifest never replaces the manifest of a real IEMOCAP prepared in the same cache.

A corpus already generated with the same parameters is reused (``synth_info.json`` holds
them); one generated with other parameters is replaced. A folder that holds anything else
is never written into.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from mer.common.cli import cache_option
from mer.common.errors import MerError

SESSIONS = 5
QUICK_PER_CLASS = 8
# Features extracted and trained on: acoustic functionals + frame MFCCs, sentence embeddings.
FEATURES = ["egemaps", "mfcc", "bert"]
QUICK_FEATURES = ["egemaps", "bert"]
QUICK_EPOCHS = 15


def _say(msg: str) -> None:
    import click

    click.echo(msg, err=True)


def corpus_params(per_class: int, seed: int) -> dict:
    from mer.common.synth import SynthConfig

    return SynthConfig(layout="iemocap", per_class=per_class, sessions=SESSIONS, seed=seed).params()


def ensure_corpus(corpus: Path, per_class: int, seed: int, quiet: bool = False) -> tuple[dict, bool]:
    """Generate the demo corpus into ``corpus`` unless it is already there with these
    parameters; returns (synth_info, reused)."""
    from mer.common.synth import INFO_FILE, generate, read_info

    want = corpus_params(per_class, seed)
    info = read_info(corpus) if corpus.exists() else None
    if info is not None:
        n_wavs = sum(1 for _ in corpus.glob("Session*/sentences/wav/*/*.wav"))
        if info.get("params") == want and n_wavs == info.get("n_utterances"):
            return info, True
        # Ours (it has synth_info.json) but generated with other parameters, or incomplete.
        _say(f"demo: {corpus} was generated with other parameters (or is incomplete): regenerating")
        shutil.rmtree(corpus)
    elif corpus.exists() and any(corpus.iterdir()):
        raise MerError(f"{corpus}: not empty and not a mer demo corpus (no {INFO_FILE}); choose another --out")
    t = time.time()
    generate(corpus, layout="iemocap", per_class=per_class, sessions=SESSIONS, seed=seed, quiet=quiet)
    info = read_info(corpus)
    info["seconds"] = round(time.time() - t, 1)
    return info, False


def run_demo(cache=None, out=None, per_class: int = 20, seed: int = 0, quick: bool = False) -> dict:
    """Run the demo; returns what was written where (also printed)."""
    from mer.common import paths

    if per_class < 1:
        raise MerError(f"--per-class must be at least 1 (got {per_class})")
    if quick:
        per_class = min(per_class, QUICK_PER_CLASS)
    root = paths.cache_root(cache)
    corpus = Path(out).expanduser() if out else root / "demo-corpus"
    demo_cache = root / "demo"
    summary: dict = {"corpus": str(corpus), "cache": str(demo_cache)}

    # 1. corpus
    info, reused = ensure_corpus(corpus, per_class, seed)
    how = "reused" if reused else f"generated in {info.get('seconds', '?')} s"
    _say(f"demo corpus: {corpus} ({info['n_utterances']} utterances, {info['sessions']} sessions, "
         f"{info['speakers']} speakers; {how})")
    summary["utterances"] = info["n_utterances"]

    # 2. manifest
    from mer.common.datasets.prepare import prepare

    m, report = prepare("iemocap", corpus, cache=demo_cache)
    summary["manifest"] = str(m.path)

    # 3. features
    from mer.extract.engine import run_extract
    from mer.train.rundir import runs_table
    from mer.common import console
    from mer.train.run import run_train

    features = QUICK_FEATURES if quick else FEATURES
    stores = run_extract("iemocap", features, cache=demo_cache)
    summary["features"] = {k: str(v) for k, v in stores.items()}

    # 4. training: the fusion of both modalities, and each modality alone, leave-one-session-out
    audio = [f for f in features if f != "bert"]
    runs_dir = demo_cache / "runs"
    epochs = QUICK_EPOCHS if quick else None
    runs = run_train("iemocap", [",".join(["bert", *audio])], "concat,late", protocol="loso",
                     cache=demo_cache, out=runs_dir, epochs=epochs, plots=not quick)
    runs += run_train("iemocap", ["bert", ",".join(audio)], "concat", protocol="loso",
                      cache=demo_cache, out=runs_dir, epochs=epochs, plots=not quick)
    for r in runs:   # one metrics line per run, as `mer train` prints them
        for line in r.lines():
            console.result(line)
    summary["runs"] = [str(r) for r in runs]
    t = runs_table([str(r) for r in runs])
    cols = [c for c in ("features", "fusion", "protocol", "ua", "ua_std", "weighted_f1", "accuracy") if c in t.columns]
    if len(t):
        summary["table"] = t[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
    _print_summary(summary)
    return summary


def _print_summary(s: dict) -> None:
    lines = ["", "mer demo: what was written where", f"  corpus    {s['corpus']}"]
    if "manifest" in s:
        lines.append(f"  manifest  {s['manifest']}")
    for name, path in s.get("features", {}).items():
        lines.append(f"  features  {name}: {path}")
    for r in s.get("runs", []):
        lines.append(f"  run       {r}")
    if s.get("table"):
        lines += ["", s["table"], ""]
    if s.get("runs"):
        lines.append(f"compare the runs with: mer runs {Path(s['runs'][0]).parent}")
    lines.append(f"(the demo's cache root is {s['cache']}: pass --cache {s['cache']} to other mer commands)")
    _say("\n".join(lines))


@click.command()
@cache_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Where to write the synthetic corpus (default: <cache>/demo-corpus).")
@click.option("--per-class", type=int, default=20, show_default=True, help="Utterances per emotion per session.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="Smaller corpus, fewer epochs (for smoke tests).")
def demo(cache, out, per_class, seed, quick):
    """Synthesize an IEMOCAP-layout corpus, then prepare, extract and train on it.

    Nothing is downloaded: speech comes from espeak-ng (espeakng-loader), text features from
    the packaged all-MiniLM-L6-v2 weights.
    """
    run_demo(cache=cache, out=out, per_class=per_class, seed=seed, quick=quick)
