"""Benchmark: mer against its peers (lhotse, opensmile, nkululeko) on the same corpus, paired.

Issue 17 item 6. The peers are installed from PyPI into their OWN virtual environment
(``--peers-venv``, default ``<user cache>/mer/bench-peers-venv``), created on the first run
and reused after: they pin other versions of shared libraries than mer does, and installing
them beside mer would change what mer is measured with. Their work runs in that
environment's python, as this same file with ``--peer TASK`` (so only the standard library is
imported at the top of this file).

One corpus, synthesized by ``mer.common.synth.generate`` (IEMOCAP layout, espeak-ng speech,
16 kHz; per_class 16: 350 wavs, of which 4 emotions x 16 x 5 sessions = 320 carry an emo4
label), prepared once by ``mer prepare``; every side processes all the manifest's wavs. Every comparison runs both sides ``--repeats`` times, paired, the order
alternating (mer first on even repeats, the peer first on odd ones), each side in a fresh
cache/output folder, measured by ``bench_extract.run_measured`` (wall time; CPU seconds and
peak summed PSS of the process tree sampled every 0.5 s) plus the children's rusage for CPU
(a process that ends between two samples is still counted):

a. features: ``mer extract -f mfcc,mel,egemaps --workers 2`` (64-band log-mel, 40 MFCCs,
   eGeMAPSv02 functionals + LLDs from one openSMILE pass)
   vs lhotse ``CutSet.compute_and_store_features`` with ``Fbank`` (64 bins) and ``Mfcc``
   (40 ceps from 40 bins), ``num_jobs=2``, plus ``opensmile.Smile(eGeMAPSv02, ...,
   num_workers=2, multiprocessing=True).process_files`` for functionals and for LLDs (the
   outputs mer stores), written to parquet;
b. eGeMAPS alone: ``mer extract -f egemaps --egemaps.lld false --workers 2`` (functionals
   only, as the peer) vs ``opensmile.Smile(eGeMAPSv02, Functionals, num_workers=2,
   multiprocessing=True).process_files``;
c. a first full run: ``mer prepare`` + ``mer extract -f egemaps`` + ``mer train -f egemaps
   --protocol loso`` (concat fusion: an MLP; mer's default epochs and early stopping) from an
   empty cache vs nkululeko from an empty experiment folder on the same corpus exported as
   its CSV format (every manifest row: file, speaker, gender, emotion, fold = session; not
   timed), eGeMAPSv02 functionals (``[FEATS] type = ['os']``), standard scaling, an SVM
   (nkululeko's MLP has no leave-one-group-out: ``Model._do_logo`` is sklearn-only),
   ``logo = 5`` over the session folds, ``n_jobs = 2``;
d. training alone: the same ``mer train`` on the stores of (c) vs nkululeko rerun in the
   experiment folder of (c), where its features are stored (checked: it does not extract
   again; it still reads the CSV, splits, scales, trains, writes its report and plot);
e. start-up: ``mer --help`` and ``mer train --help`` vs ``lhotse --help`` and
   ``python -m nkululeko.nkululeko --help``.

Each side checks the other did the same work: files processed and feature dimensions (the
table's ``check`` column), and for (c)/(d) the unweighted accuracy both report.
Prints a Markdown table: median wall / CPU / peak PSS of each side and the ratio mer/peer
(below 1: mer is ahead).

    python bench/bench_peers.py --repeats 5 --out /tmp/mer-bench-peers/results.json
    python bench/bench_peers.py --quick            # smoke run: 35 wavs, 1 repeat, 3 epochs

Peer quirks met here: nkululeko needs torch (pinned to the CPU wheel first, else pip takes a
CUDA build); its feature-store pickles of the model hold nkululeko classes (only the
``*_os_all.pkl`` DataFrame is read back here); scikit-learn 1.9 warns (FutureWarning) about
``SVC(probability=True)`` on every fold; lhotse's default lilcom storage is lossy, so the
NumpyFilesWriter is used; ``lhotse --help`` imports most of lhotse (torch included).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve()
BIN = Path(sys.executable).parent
# Pinned so every run measures the same peers (the newest releases on 2026-12-03).
# torch first, from its CPU wheel: nkululeko needs torch, and an unpinned one would pull a
# multi-GB CUDA build (docs/environment.md).
PEER_TORCH = "torch==2.13.0"
PEER_PACKAGES = ["lhotse==1.33.0", "opensmile==2.6.0", "nkululeko==1.14.1"]
WORKERS = 2
SHORT_S = 1.0  # a side whose median wall is under 2 x this has no memory figure (see table)


def default_peers_venv() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mer" / "bench-peers-venv"


def ensure_peers(venv: Path) -> dict:
    """The peers' environment, created on first use; returns its record (versions and how
    long the install took). Reused while the pins are the same; otherwise rebuilt."""
    record = venv / "mer-bench-peers.json"
    want = [PEER_TORCH, *PEER_PACKAGES]
    if record.exists():
        rec = json.loads(record.read_text())
        if rec.get("pins") == want and (venv / "bin" / "python").exists():
            rec["reused"] = True
            return rec
        print(f"peer environment {venv} has other pins ({rec.get('pins')}): rebuilding", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing the peers into {venv} (first run only): {' '.join(want)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in ([PEER_TORCH], PEER_PACKAGES):
        r = subprocess.run(pip + args, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"installing {' '.join(args)} into {venv} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
         "('torch', 'lhotse', 'opensmile', 'nkululeko', 'numpy', 'pandas', 'scikit-learn')}))"],
        capture_output=True, text=True, check=True)
    rec = {"pins": want, "install_s": round(seconds, 1), "versions": json.loads(probe.stdout),
           "installed_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    record.write_text(json.dumps(rec, indent=1))
    rec["reused"] = False
    return rec



# ---------------------------------------------------------------------------------------
# The peers' side: runs in the peers' python as `bench_peers.py --peer TASK ...`, imports
# only what the peers installed. Each writes a summary JSON (files processed, dimensions).
# ---------------------------------------------------------------------------------------


def peer_lhotse_smile(files_json: str, out: str) -> None:
    """lhotse Fbank + Mfcc with its own parallel extraction, then openSMILE eGeMAPSv02
    functionals and LLDs with openSMILE's own process pool: mer's three extractors."""
    import opensmile
    from lhotse import CutSet, Fbank, FbankConfig, Mfcc, MfccConfig, Recording, RecordingSet
    from lhotse.features.io import NumpyFilesWriter

    files = json.loads(Path(files_json).read_text())
    out = Path(out)
    recs = RecordingSet.from_recordings(Recording.from_file(f, recording_id=f"r{i:05d}") for i, f in enumerate(files))
    cuts = CutSet.from_manifests(recordings=recs)
    summary = {}
    # Same parameters as mer's mel/mfcc (25 ms window, 10 ms hop): 64 mel bins; 40 cepstra
    # from 40 bins. NumpyFilesWriter: float32, lossless, as mer's stores (lhotse's default
    # lilcom writer compresses lossily).
    for name, ex in (("fbank", Fbank(FbankConfig(num_filters=64))), ("mfcc", Mfcc(MfccConfig(num_filters=40, num_ceps=40)))):
        done = cuts.compute_and_store_features(extractor=ex, storage_path=str(out / name), num_jobs=WORKERS,
                                               storage_type=NumpyFilesWriter)
        done = CutSet.from_cuts(done)  # eager: count and check what was written
        summary[name] = {"files": sum(1 for c in done if c.has_features), "dim": next(iter(done)).num_features}
    for name, level in (("egemaps", opensmile.FeatureLevel.Functionals), ("egemaps_lld", opensmile.FeatureLevel.LowLevelDescriptors)):
        smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=level,
                                num_workers=WORKERS, multiprocessing=True)
        df = smile.process_files(files)
        df.to_parquet(out / f"{name}.parquet")
        summary[name] = {"files": int(df.index.get_level_values("file").nunique()), "dim": int(df.shape[1])}
    (out / "summary.json").write_text(json.dumps(summary))


def peer_smile(files_json: str, out: str) -> None:
    """eGeMAPSv02 functionals, as opensmile's README parallelises them."""
    import opensmile

    files = json.loads(Path(files_json).read_text())
    out = Path(out)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals,
                            num_workers=WORKERS, multiprocessing=True)
    df = smile.process_files(files)
    df.to_parquet(out / "egemaps.parquet")
    summary = {"egemaps": {"files": int(df.index.get_level_values("file").nunique()), "dim": int(df.shape[1])}}
    (out / "summary.json").write_text(json.dumps(summary))


PEER_TASKS = {"lhotse_smile": peer_lhotse_smile, "smile": peer_smile}

# ---------------------------------------------------------------------------------------
# mer's side and the pairing
# ---------------------------------------------------------------------------------------


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """bench_extract.run_measured, plus the children's rusage: a process that ends between
    two 0.5 s samples (a short command, the last moments of each step of a chain) is missed
    by the sampler but counted by the kernel once reaped; a forkserver's workers are the
    reverse. The larger of the two is the CPU figure."""
    import resource

    from bench_extract import run_measured

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, pss, cpu, out = run_measured(cmd, env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ru = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"wall_s": wall, "cpu_s": max(cpu, cpu_ru), "pss_MiB": pss / 2**20, "out": out}


def mer_cmd(*args: str) -> list[str]:
    return [str(BIN / "mer"), *args]


def store_summary(cache: Path) -> dict:
    """feature -> files with features and the dimension of each output, read back from the
    stores mer wrote."""
    from mer.extract.cache import list_stores

    out = {}
    for st in list_stores("iemocap", cache):
        if not st.get("complete"):
            raise SystemExit(f"mer left an incomplete store: {st['path']} ({st.get('error') or st.get('partial')})")
        out[st["feature"]] = {"files": st["valid"], "dims": {k: v.get("dim") for k, v in st["outputs"].items()}}
    return out


def run_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def checked_and_removed(summary: dict, folder: Path) -> dict:
    """Drop a side's outputs once their summary is read: 5 repeats of (a) would otherwise
    keep ten copies of the corpus's frame features."""
    shutil.rmtree(folder, ignore_errors=True)
    return summary


class Bench:
    def __init__(self, a):
        self.a = a
        self.root = Path(a.work)
        self.peer_py = str(Path(a.peers_venv) / "bin" / "python")
        self.rows: list[dict] = []
        self.n_run = 0

    def fresh(self, tag: str) -> Path:
        self.n_run += 1
        d = self.root / "runs" / f"{self.n_run:03d}-{tag}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def prepared_cache(self, tag: str) -> Path:
        """A fresh cache holding only the prepared manifest (no feature stores)."""
        d = self.fresh(tag) / "cache"
        shutil.copytree(self.base_cache / "iemocap", d / "iemocap", ignore=shutil.ignore_patterns("features"))
        return d

    def env(self, cache: Path) -> dict:
        return {**os.environ, "MER_CACHE": str(cache)}

    def setup_corpus(self) -> None:
        from mer.common.synth import generate

        a = self.a
        self.corpus = self.root / f"corpus-{a.per_class}"
        if not (self.corpus / "synth_info.json").exists():
            shutil.rmtree(self.corpus, ignore_errors=True)
            t = time.perf_counter()
            generate(self.corpus, layout="iemocap", per_class=a.per_class, sessions=5, seed=0)
            print(f"synthesized {self.corpus} in {time.perf_counter() - t:.0f} s", flush=True)
        self.base_cache = self.root / "base-cache"
        shutil.rmtree(self.base_cache, ignore_errors=True)
        shutil.rmtree(self.root / "runs", ignore_errors=True)  # a previous invocation's outputs
        subprocess.run(mer_cmd("prepare", "-d", "iemocap", "--root", str(self.corpus)), env=self.env(self.base_cache),
                       check=True, capture_output=True)
        import pandas as pd

        man = pd.read_parquet(self.base_cache / "iemocap" / "manifest.parquet")
        self.files = [str(f) for f in man["audio"]]
        self.files_json = self.root / "files.json"
        self.files_json.write_text(json.dumps(self.files))
        self.labelled = export_nkululeko_csv(man, self.root / "nkululeko-data.csv")
        print(f"corpus: {len(self.files)} wavs ({float(man['duration'].sum()) / 60:.1f} min of audio), "
              f"{self.labelled} with an emo4 label", flush=True)

    def pair(self, name: str, mer_side, peer_side, check) -> None:
        """Run both sides --repeats times, alternating which goes first; record each
        measurement and the check of the last pair."""
        res = {"mer": [], "peer": []}
        last = {}
        for r in range(self.a.repeats):
            order = [("mer", mer_side), ("peer", peer_side)]
            if r % 2:
                order.reverse()
            for side, fn in order:
                m, info = fn()
                res[side].append({k: m[k] for k in ("wall_s", "cpu_s", "pss_MiB")})
                last[side] = info
                print(f"  {name} [{r + 1}/{self.a.repeats}] {side}: {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU, "
                      f"{m['pss_MiB']:.0f} MiB", flush=True)
        row = {"what": name, "mer": res["mer"], "peer": res["peer"], "check": check(last.get("mer"), last.get("peer"))}
        self.rows.append(row)
        print(f"  check: {row['check']}", flush=True)

    # --- the five comparisons --------------------------------------------------------

    def mer_extract(self, tag: str, *args: str):
        """mer extract from a cache that holds only the manifest."""
        cache = self.prepared_cache(tag)
        m = measure(mer_cmd("extract", "-d", "iemocap", *args, "--workers", str(WORKERS), "--quiet"), self.env(cache))
        return m, checked_and_removed(store_summary(cache), cache.parent)

    def peer_task(self, tag: str, task: str):
        """One of PEER_TASKS on the corpus's wavs, in the peers' python."""
        out = self.fresh(tag)
        m = measure([self.peer_py, str(HERE), "--peer", task, str(self.files_json), str(out)])
        return m, checked_and_removed(json.loads((out / "summary.json").read_text()), out)

    def features(self) -> None:
        """(a) mfcc + mel + egemaps vs lhotse Fbank + Mfcc plus opensmile eGeMAPS."""
        def check(me, peer):
            return (f"mer: mel {me['mel']['files']} x {me['mel']['dims']}, mfcc {me['mfcc']['files']} x {me['mfcc']['dims']}, "
                    f"egemaps {me['egemaps']['files']} x {me['egemaps']['dims']}; peers: "
                    + ", ".join(f"{k} {v['files']} x {v['dim']}" for k, v in peer.items()))

        self.pair("a. mfcc+mel+egemaps vs lhotse Fbank+Mfcc + opensmile eGeMAPS (func+LLD)",
                  lambda: self.mer_extract("a-mer", "-f", "mfcc,mel,egemaps"), lambda: self.peer_task("a-peer", "lhotse_smile"), check)

    def egemaps(self) -> None:
        """(b) eGeMAPS functionals alone vs opensmile's own process pool."""
        def check(me, peer):
            return (f"mer: egemaps {me['egemaps']['files']} x {me['egemaps']['dims']}; "
                    f"opensmile: {peer['egemaps']['files']} x {peer['egemaps']['dim']}")

        self.pair("b. eGeMAPS functionals vs opensmile process_files(num_workers=2, multiprocessing)",
                  lambda: self.mer_extract("b-mer", "-f", "egemaps", "--egemaps.lld", "false"),
                  lambda: self.peer_task("b-peer", "smile"), check)

    def mer_train_cmd(self, out: Path) -> list[str]:
        return mer_cmd("train", "-d", "iemocap", "-f", "egemaps", "--fusion", "concat", "--protocol", "loso", "-o", str(out),
                       "--run-id", "run", "--quiet", "--no-plots", *(["--epochs", str(self.a.epochs)] if self.a.epochs else []))

    def first_run(self) -> None:
        """(c) prepare + extract egemaps + LOSO train, from nothing, vs nkululeko from nothing.
        The last pair's folders are kept for (d)."""
        def mer_side():
            d = self.fresh("c-mer")
            cache = d / "cache"
            chain = " && ".join(" ".join(map(str, c)) for c in (
                mer_cmd("prepare", "-d", "iemocap", "--root", str(self.corpus)),
                mer_cmd("extract", "-d", "iemocap", "-f", "egemaps", "--workers", str(WORKERS), "--quiet"),
                self.mer_train_cmd(d / "runs")))
            m = measure(["bash", "-c", chain], self.env(cache))
            self.c_mer = d
            return m, {**store_summary(cache), "metrics": run_metrics(d / "runs" / "run")}

        def peer_side():
            d = self.fresh("c-nkululeko")
            ini = write_nkululeko_ini(d, self.root / "nkululeko-data.csv")
            m = measure([self.peer_py, "-m", "nkululeko.nkululeko", "--config", str(ini)])
            self.c_peer = d
            return m, nkululeko_summary(d, m["out"])

        self.pair("c. first full run: prepare + extract egemaps + LOSO train vs nkululeko (os eGeMAPS, SVM, LOGO by session)",
                  mer_side, peer_side, self.check_train)

    def training(self) -> None:
        """(d) training alone, on the features (c) left."""
        def mer_side():
            out = self.fresh("d-mer")
            m = measure(self.mer_train_cmd(out), self.env(self.c_mer / "cache"))
            return m, {**store_summary(self.c_mer / "cache"), "metrics": run_metrics(out / "run")}

        def peer_side():
            # nkululeko reuses the features stored in its experiment folder; its results
            # and plots are overwritten.
            m = measure([self.peer_py, "-m", "nkululeko.nkululeko", "--config", str(self.c_peer / "exp.ini")])
            if "Extracting OpenSMILE" in m["out"]:
                raise SystemExit("nkululeko extracted its features again in (d): the comparison would not be training alone")
            return m, nkululeko_summary(self.c_peer, m["out"])

        self.pair("d. training alone (features stored) vs nkululeko rerun on its stored features", mer_side, peer_side, self.check_train)

    def check_train(self, me, peer):
        return f"mer: {me['egemaps']['files']} utterances extracted, {ua_text(me['metrics'])}; nkululeko: {peer}"

    def startup(self) -> None:
        """(e) CLI start-up."""
        for mer_args, peer_cmd, peer_name in (
            (["--help"], [str(Path(self.peer_py).parent / "lhotse"), "--help"], "lhotse --help"),
            (["train", "--help"], [self.peer_py, "-m", "nkululeko.nkululeko", "--help"], "python -m nkululeko.nkululeko --help"),
        ):
            self.pair(f"e. mer {' '.join(mer_args)} vs {peer_name}", lambda a=mer_args: (measure(mer_cmd(*a)), None),
                      lambda c=peer_cmd: (measure(c), None), lambda me, peer: "")

    # --- report ----------------------------------------------------------------------

    def table(self) -> str:
        lines = ["| comparison | mer wall (s) | peer wall (s) | wall mer/peer | mer CPU (s) | peer CPU (s) | CPU mer/peer "
                 "| mer peak PSS (MiB) | peer peak PSS (MiB) | memory mer/peer |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            cells = [r["what"]]
            for k, fmt in (("wall_s", "{:.2f}"), ("cpu_s", "{:.2f}"), ("pss_MiB", "{:.0f}")):
                mm, pm = median([x[k] for x in r["mer"]]), median([x[k] for x in r["peer"]])
                r[f"ratio_{k}"] = mm / pm if pm else None
                if k == "pss_MiB" and min(median([x["wall_s"] for x in r[side]]) for side in ("mer", "peer")) < 2 * SHORT_S:
                    # The sampler reads memory every 0.5 s: a command of a second or two is
                    # seen once or twice, often before it has loaded anything.
                    r[f"ratio_{k}"] = None
                    cells += ["-", "-", "n/a (too short to sample)"]
                    continue
                cells += [fmt.format(mm), fmt.format(pm), f"{mm / pm:.2f}x" if pm else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def ua_text(metrics: dict) -> str:
    """The unweighted accuracy mer reports (mean over folds), whatever the key's nesting."""
    for key in ("ua", "test_ua", "UA"):
        for d in (metrics, metrics.get("test", {}), metrics.get("mean", {}), metrics.get("summary", {})):
            if isinstance(d, dict) and isinstance(d.get(key), (int, float)):
                return f"UA {d[key]:.3f}"
            if isinstance(d, dict) and isinstance(d.get(key), dict) and "mean" in d[key]:
                return f"UA {d[key]['mean']:.3f}"
    return "UA ? (metrics.json keys: " + ", ".join(list(metrics)[:8]) + ")"


def export_nkululeko_csv(man, path: Path) -> int:
    """The corpus in nkululeko's CSV format (file, speaker, gender, emotion, fold): every
    row of mer's manifest, so both extract the same files; emotions mapped as mer's default
    scheme emo4 (exc merged into hap), the others left as their raw codes, which the INI's
    ``labels`` leaves out of training as mer's scheme does. fold = session, so its
    leave-one-group-out folds are mer's LOSO folds. Returns the rows with an emo4 label."""
    emo4 = {"ang": "ang", "hap": "hap", "exc": "hap", "sad": "sad", "neu": "neu"}
    out = man.assign(file=man["audio"], emotion=man["emotion"].map(lambda e: emo4.get(e, e)), fold=man["session"])[
        ["file", "speaker", "gender", "emotion", "fold"]]
    out.to_csv(path, index=False)
    return int(man["emotion"].isin(list(emo4)).sum())


def write_nkululeko_ini(exp: Path, csv: Path) -> Path:
    """nkululeko's experiment: eGeMAPSv02 functionals (its `os` features), standard scaling,
    an SVM (its classic model: its MLP does not run leave-one-group-out), LOGO over the
    CSV's fold column (= session), 2 jobs like mer's 2 workers."""
    ini = exp / "exp.ini"
    ini.write_text(f"""[EXP]
root = {exp}/
name = bench
runs = 1
epochs = 1
[DATA]
databases = ['synth']
synth = {csv}
synth.type = csv
synth.absolute_path = True
synth.split_strategy = speaker_split
synth.test_size = 20
target = emotion
labels = ['ang', 'hap', 'sad', 'neu']
[FEATS]
type = ['os']
set = eGeMAPSv02
scale = standard
[MODEL]
type = svm
logo = 5
n_jobs = {WORKERS}
""")
    return ini


def nkululeko_summary(exp: Path, out: str) -> str:
    """Rows and feature dimensions nkululeko stored, and its LOGO result line."""
    import glob

    import pandas as pd

    parts = []
    # The features of all rows (the other pickles there hold nkululeko's own classes).
    for f in sorted(glob.glob(f"{exp}/bench/store/*_os_all.pkl")):
        df = pd.read_pickle(f)
        parts.append(f"{Path(f).name} {df.shape[0]} x {df.shape[1]}")
    res = sorted(glob.glob(f"{exp}/bench/results/**/logo_results.txt", recursive=True))
    if res:
        parts.append(Path(res[0]).read_text().splitlines()[0] + " (UAR)")
    return "; ".join(parts) or "(nothing found in its store: " + out[-300:] + ")"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers-venv", type=Path, default=default_peers_venv(),
                    help="the peers' virtual environment (created on first use)")
    ap.add_argument("--work", default="/tmp/mer-bench-peers", help="corpus, caches and outputs")
    ap.add_argument("--per-class", type=int, default=16, help="synth per_class (16: 320 labelled utterances)")
    ap.add_argument("--repeats", type=int, default=5, help="pairs per comparison")
    ap.add_argument("--epochs", type=int, default=0, help="mer train --epochs (0: mer's default)")
    ap.add_argument("--only", default="abcde", help="which comparisons, e.g. ab (d needs c)")
    ap.add_argument("--quick", action="store_true", help="smoke run: per_class 1, 1 repeat, 3 epochs")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--install-only", action="store_true", help="create the peers' environment and stop")
    ap.add_argument("--peer", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer:
        PEER_TASKS[a.peer[0]](*a.peer[1:])
        return
    if a.quick:
        a.per_class, a.repeats, a.epochs = 1, 1, a.epochs or 3
        a.work = a.work + "-quick"
    peers = ensure_peers(a.peers_venv)
    print(f"peers: {json.dumps(peers)}", flush=True)
    if a.install_only:
        return
    if "d" in a.only and "c" not in a.only:
        raise SystemExit("--only: d (training alone) runs on what c left; add c")
    sys.path.insert(0, str(HERE.parent))
    from bench_extract import machine

    print("## machine\n```\n" + machine() + "\n```", flush=True)
    b = Bench(a)
    b.root.mkdir(parents=True, exist_ok=True)
    b.setup_corpus()
    for k, fn in (("a", b.features), ("b", b.egemaps), ("c", b.first_run), ("d", b.training), ("e", b.startup)):
        if k in a.only:
            print(f"### {fn.__doc__.splitlines()[0]}", flush=True)
            fn()
    table = b.table()
    print(f"\n{len(b.files)} wavs ({b.labelled} labelled), {a.repeats} paired repeats each (order alternating), medians; "
          "ratio below 1: mer ahead\n")
    print(table)
    for r in b.rows:
        if r["check"]:
            print(f"- {r['what'][:2]} {r['check']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"peers": peers, "wavs": len(b.files), "labelled": b.labelled, "repeats": a.repeats,
                                     "per_class": a.per_class, "epochs": a.epochs, "rows": b.rows, "table": table}, indent=1))
        print(f"results: {a.out}")


if __name__ == "__main__":
    main()
