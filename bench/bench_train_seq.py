"""Benchmark: sequence fusions (frame/token inputs), 5-fold LOSO, this code against a baseline commit.

For one or more synthetic IEMOCAP-layout corpora (espeak-ng speech from mer.common.synth,
features extracted by `mer extract`: bert, mfcc, mel, egemaps), runs `mer train` for every
named fusion with a fixed number of epochs, twice: with this checkout and with the code of
``--baseline`` (default 9748dd6, main before issue 10), checked out by ``git archive`` into a
temporary folder and run by the same Python, on the same corpus, in this same script (the
baseline reads stores of its own version, so it extracts the corpus with its own code). Each
command runs in its own process; the script samples the summed PSS of its process tree
(workers included) every 0.5 s. Reported per (corpus, fusion, code): wall seconds, training
utterances per second (training rows x epochs run, summed over folds, over the wall time of the
whole command, loading included) and per CPU second (all its processes: the fairer figure on a
shared machine), peak tree PSS, and new/old ratios; for the new code also the
peak RSS of the training process after every fold (from history.json), to show it is flat.

The old code is slow; ``--old-epochs`` runs it for fewer epochs (throughput is per epoch, so
the ratio stays fair: it is computed from utterances per second, not from wall times).

    python bench/bench_train_seq.py --per-class 16 --epochs 3 --old-epochs 1 \\
        --fusions attention:bert,mel weighted:bert,mfcc --out /tmp/mer-bench-seq
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_extract import BIN, machine, run_measured  # noqa: E402

REPO = HERE.parent
DEFAULT_FUSIONS = ["attention:bert,mel", "weighted:bert,mfcc", "masked:bert,mfcc", "interaction:bert,mfcc",
                   "cross:bert,mfcc", "hierarchical:bert,mfcc"]
# Runs the baseline's CLI: its folders are mapped as the `mer.*` packages, ahead of (and
# instead of) this checkout's editable install.
OLD_LAUNCH = """
import importlib.util, sys
root = sys.argv.pop(1)
class Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] != "mer" or len(parts) < 2 or parts[1] not in ("common", "extract", "train", "manifests"):
            return None
        p = root + "/" + "/".join(parts[1:])
        import os
        if os.path.isdir(p):
            return importlib.util.spec_from_file_location(name, p + "/__init__.py", submodule_search_locations=[p])
        return importlib.util.spec_from_file_location(name, p + ".py")
sys.meta_path.insert(0, Finder)
import mer.train.trainer as t
assert t.__file__.startswith(root), t.__file__
from mer.common.cli import main
main(sys.argv[1:])
"""


def corpus(out: Path, per_class: int, features: str, lengths: str = "espeak", bert_model: str | None = None) -> tuple[Path, dict]:
    """Synthesize (once) and extract (once) a corpus; returns its cache and what it cost.
    ``lengths="iemocap"``: utterance durations drawn like IEMOCAP's (1-15 s, mean ~4.5 s)."""
    tag = f"{per_class}" + ("" if lengths == "espeak" else f"-{lengths}")
    root, cache = out / f"corpus-{tag}", out / f"cache-{tag}"
    info = {}
    if not (root / "synth_info.json").exists():
        from mer.common.synth import generate

        t0 = time.perf_counter()
        generate(root, layout="iemocap", per_class=per_class, sessions=5, seed=0, workers=2, lengths=lengths)
        info["synth_s"] = round(time.perf_counter() - t0, 1)
    if not (cache / ".extracted").exists():
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "mer"), "extract", "-d", "iemocap", "-r", str(root), "-f", features,
                        "--cache", str(cache), "--workers", "2", "-q",
                        *(["--bert.model", bert_model] if bert_model else [])], check=True)
        (cache / ".extracted").write_text(features)
        info["extract_s"] = round(time.perf_counter() - t0, 1)
    return cache, info


def old_cache(out: Path, per_class: int, old_tree: Path, features: str, lengths: str = "espeak") -> Path:
    """The baseline reads only its own store version (1; this code writes 2, with per-chunk
    checksums), so it extracts the same corpus with its own code, in its own process
    (``--workers 0``: a worker process would import this checkout's modules instead)."""
    tag = f"{per_class}" + ("" if lengths == "espeak" else f"-{lengths}")
    root, cache = out / f"corpus-{tag}", out / f"cache-{tag}-old"
    marker = cache / ".extracted"
    if not marker.exists() or not set(features.split(",")) <= set(marker.read_text().split(",")):
        subprocess.run([sys.executable, "-c", OLD_LAUNCH, str(old_tree), "extract", "-d", "iemocap", "-r", str(root),
                        "-f", features, "--cache", str(cache), "--workers", "0", "-q"], check=True)
        (cache / ".extracted").write_text(features)
    return cache


def baseline_tree(out: Path, commit: str) -> Path:
    tree = out / f"baseline-{commit}"
    if not (tree / "train" / "trainer.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        arch = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=arch, check=True)
    return tree


def run_one(code: str, old_tree: Path | None, cache: Path, fusion: str, feats: str, epochs: int, out: Path,
            protocol: str = "loso", rows_per_epoch: dict | None = None) -> dict:
    runs = out / f"runs-{code}-{fusion}-{cache.name}"
    args = ["train", "-d", "iemocap", "-f", feats, "--fusion", fusion, "--protocol", protocol, "--epochs", str(epochs),
            "--patience", str(epochs + 1), "--cache", str(cache), "--out", str(runs), "--no-plots", "-q"]
    if old_tree is None:
        cmd = [str(BIN / "mer"), *args]
    else:
        cmd = [sys.executable, "-c", OLD_LAUNCH, str(old_tree), *args]
    wall, pss, cpu, _ = run_measured(cmd)
    run = max(runs.iterdir(), key=lambda p: p.stat().st_mtime)
    hist = json.loads((run / "history.json").read_text())
    utts = sum(e.get("train_rows", 0) for f in hist for e in f["epochs"])
    if not utts:  # the baseline's history has no train_rows: the same folds' rows from the new run
        utts = sum(rows_per_epoch[(str(f["seed"]), str(f["fold"]))] * len(f["epochs"]) for f in hist)
    per_epoch = {(str(f["seed"]), str(f["fold"])): f["epochs"][0].get("train_rows", 0) for f in hist}
    ua = json.loads((run / "metrics.json").read_text())["mean"].get("ua")
    rss = [max(e.get("peak_rss_mb", 0) for e in f["epochs"]) for f in hist]
    return {"wall": wall, "pss_gb": pss / 2**30, "cpu": cpu, "utts": utts, "ups": utts / wall, "upc": utts / max(cpu, 1e-9),
            "ua": ua, "fold_rss_mb": rss, "rows_per_epoch": per_epoch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, nargs="+", default=[16], help="synth per_class per corpus (x 4 classes x 5 sessions)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--old-epochs", type=int, default=None, help="epochs for the baseline (default: --epochs)")
    ap.add_argument("--fusions", nargs="+", default=DEFAULT_FUSIONS, help="fusion:features pairs")
    ap.add_argument("--baseline", default="9748dd6")
    ap.add_argument("--protocol", default="loso", help="loso (5 folds) or si (2 folds: cheaper for the slow baseline)")
    ap.add_argument("--no-old", action="store_true", help="only this code")
    ap.add_argument("--lengths", default="espeak", choices=["espeak", "iemocap"],
                    help="utterance durations: espeak's (1-8.5 s) or drawn like IEMOCAP's (1-15 s, mean ~4.5 s)")
    ap.add_argument("--out", default="/tmp/mer-bench-seq")
    ap.add_argument("--bert-model", default=None,
                    help="mer extract --bert.model (a folder; default: the packaged MiniLM), e.g. a config-built one on a "
                         "machine without the MiniLM package (bench/gpu_check.sh)")
    ap.add_argument("--json", default=None, help="also write this code's rows to this JSON file")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine())
    print(f"command: {' '.join(sys.argv)}")
    old_tree = None if args.no_old else baseline_tree(out, args.baseline)
    rows = []
    for k in args.per_class:
        cache, info = corpus(out, k, "bert,mfcc,mel,egemaps", args.lengths, args.bert_model)
        print(f"\ncorpus per_class={k} ({20 * k} utterances): {info or 'reused'}", flush=True)
        if old_tree is not None:
            ocache = old_cache(out, k, old_tree, ",".join(sorted({f for p in args.fusions for f in p.split(":")[1].split(",")})),
                               args.lengths)
        for pair in args.fusions:
            fusion, feats = pair.split(":")
            new = run_one("new", None, cache, fusion, feats, args.epochs, out, args.protocol)
            old = None if old_tree is None else run_one("old", old_tree, ocache, fusion, feats,
                                                        args.old_epochs or args.epochs, out, args.protocol,
                                                        new["rows_per_epoch"])
            rows.append((k, fusion, feats, new, old))
            line = (f"{20 * k:>6} {fusion:>12} {feats:>10} | new {new['wall']:7.1f} s {new['ups']:7.1f} utt/s "
                    f"({new['upc']:.1f} per CPU s) {new['pss_gb']:5.2f} GB ua {new['ua']:.3f}")
            if old:
                line += (f" | old {old['wall']:7.1f} s {old['ups']:6.1f} utt/s ({old['upc']:.1f} per CPU s) "
                         f"{old['pss_gb']:5.2f} GB ua {old['ua']:.3f} | x{new['ups'] / old['ups']:.1f} throughput "
                         f"(x{new['upc'] / old['upc']:.1f} per CPU s), x{old['pss_gb'] / new['pss_gb']:.1f} less memory")
            print(line, flush=True)
            print(f"{'':>30}   new: peak RSS per fold (MB) {new['fold_rss_mb']}", flush=True)
    print("\n| utterances | fusion | features | new wall s | new utt/s | new peak PSS GB | old wall s (epochs) | "
          "old utt/s | old peak PSS GB | throughput ratio |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, fusion, feats, new, old in rows:
        o = (f"{old['wall']:.1f} ({args.old_epochs or args.epochs}) | {old['ups']:.1f} | {old['pss_gb']:.2f} | "
             f"{new['ups'] / old['ups']:.1f}x") if old else "- | - | - | -"
        print(f"| {20 * k} | {fusion} | {feats} | {new['wall']:.1f} | {new['ups']:.1f} | {new['pss_gb']:.2f} | {o} |")
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps([{"utterances": 20 * k, "fusion": fusion, "features": feats,
                                                "wall_s": round(new["wall"], 1), "utt_per_s": round(new["ups"], 1),
                                                "peak_pss_gb": round(new["pss_gb"], 2), "ua": new["ua"]}
                                               for k, fusion, feats, new, _ in rows], indent=1))


if __name__ == "__main__":
    main()
