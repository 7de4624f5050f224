"""The run: ``run_train`` trains every (feature set, fusion) pair and returns one
``RunResult`` each (its run directory and metrics); the CLI prints them.

Stages, each a function below: ``_plan`` (parse and check every option before any work),
``_load`` (labels, text source, feature stores), then per pair ``_train_pair``: inputs for the
fusion, the aligned data it shares with other fusions (``DataVariants``), the fold loop
(``mer.train.pool.fold_results``), the run directory (``mer.train.rundir.write_run``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from mer.common import console
from mer.common.device import choose
from mer.common.errors import MerError, UsageError
from mer.common.report import Report
from mer.train.config import TrainConfig, check_options, parse_list
from mer.train.data import (DROP_WARN_SHARE, FeatureCache, FeatureSet, InputSpec, TrainData, build_data, parse_features,
                            resolve_inputs, usage_line)
from mer.train.folds import FoldResult, autocast, check_balanced
from mer.train.fusion import build_model, check_context, fusion_wants, model_config
from mer.train.pool import fold_results


@dataclass
class RunResult:
    """One run written: its directory and the mean metrics of its folds and seeds.

    It stands where the run directory's path stood for older callers: ``str(r)``,
    ``os.fspath(r)``, ``r / "metrics.json"`` and ``r.name`` are the directory's."""

    path: Path
    fusion: str
    features: str
    metrics: dict                      # metrics.json's "mean"
    paper_fold: dict | None = None     # e.g. si: seed 003's test-female fold beside the mean

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other) -> Path:
        return self.path / other

    @property
    def name(self) -> str:
        return self.path.name

    def lines(self) -> list[str]:
        """What ``mer train`` prints for this run."""
        def shown(m):
            return ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))

        out = [f"{self.path}: {shown(self.metrics)}"]
        if self.paper_fold is not None:
            out.append(f"  paper's fold {self.paper_fold['fold']}: {shown(self.paper_fold['mean'])}")
        return out


@dataclass(frozen=True)
class DataKey:
    """Which aligned data a pair trains on; fusions that want the same inputs share it."""

    sources: tuple[InputSpec, ...]
    speaker_normalized: bool = False   # --normalize speaker
    audio_to_tokens: bool = False      # masked: audio pooled per token from word times


class DataVariants:
    """The aligned data of every ``DataKey`` asked for, each made once: the base alignment
    (``build_data``), then its speaker-normalised and token-aligned variants from it. A
    variant shares its base's data report (what it adds is counted there)."""

    def __init__(self, labels, classes, man, sch, fcache: FeatureCache, dataset: str):
        self.labels, self.classes, self.man, self.sch, self.fcache, self.dataset = labels, classes, man, sch, fcache, dataset
        self._made: dict[DataKey, tuple[TrainData, Report]] = {}

    def get(self, key: DataKey, feature_text: str) -> tuple[TrainData, Report]:
        if key not in self._made:
            self._made[key] = self._make(key, feature_text)
        return self._made[key]

    def _make(self, key: DataKey, feature_text: str) -> tuple[TrainData, Report]:
        if key.audio_to_tokens:
            from mer.train.wordalign import word_aligned

            data, rep = self.get(replace(key, audio_to_tokens=False), feature_text)
            return word_aligned(data, self.fcache), rep
        if key.speaker_normalized:
            from mer.train.speakernorm import speaker_normalized

            data, rep = self.get(replace(key, speaker_normalized=False), feature_text)
            normed, info = speaker_normalized(data)
            rep.counts["speakers normalised separately (--normalize speaker)"] = info["speakers"]
            if info["without_speaker"]:
                rep.counts["utterances without a speaker id, not speaker-normalised"] = info["without_speaker"]
            return normed, rep
        sch, man = self.sch, self.man
        rep = Report(f"training data: {self.dataset}, scheme {sch.name}, features {feature_text}")
        for raw, n in sch.unlabelled(man.df, self.labels).items():  # e.g. MELD emo6: the fear rows
            rep.counts[f"without a label under the scheme: {sch.source} {raw}"] = n
        data = build_data(man.df, self.labels, self.classes, list(key.sources), self.fcache, sch.is_regression, rep)
        line, share = usage_line(rep)
        console.info(line)
        if share > DROP_WARN_SHARE:
            console.warn(f"{share:.0%} of the labelled utterances are NOT used; the run's data_report.txt names each "
                         f"(a store extracted with other settings? `mer cache ls` lists them, `--store` picks one)")
        return data, rep


def load_labels(dataset: str, scheme_name: str | None, cache=None, manifest=None):
    """(manifest, scheme, labels, classes) for a dataset (manifest: path, Manifest or None)."""
    from mer.common import manifest as mf
    from mer.common.schemes import scheme

    man = manifest if isinstance(manifest, mf.Manifest) else mf.load(dataset, cache, manifest)
    sch = scheme(dataset, scheme_name)
    labels, classes = sch.apply(man.df)
    return man, sch, labels, classes



@dataclass
class _Plan:
    """Every option parsed and checked: nothing is read before this succeeds."""

    requests: list
    fusions: list[str]
    classes_of: dict
    seeds: list[int]
    options: dict | None
    tc: TrainConfig
    device: str
    run_id: str | None

    @property
    def n_runs(self) -> int:
        return len(self.requests) * len(self.fusions)


@dataclass
class _Loaded:
    """What every pair of the command shares: the manifest, its labels, the feature stores."""

    dataset: str
    man: "object"
    sch: "object"
    classes: list[str]
    fcache: FeatureCache
    variants: DataVariants
    protocol: str | None
    out_root: Path
    command: str | None
    plots: bool
    quiet: bool
    recipe: dict | None
    skipped: list[str] = field(default_factory=list)
    tuners: dict = field(default_factory=dict)   # --finetune: feature -> finetuner (mer.train.finetune)


def run_train(dataset: str, features, fusions, protocol: str | None = None, scheme: str | None = None,
              seeds=(0,), cache=None, out=None, epochs: int | None = None, device: str = "auto",
              manifest=None, feature_sets: dict[str, FeatureSet] | None = None, options: dict | None = None,
              config: TrainConfig | None = None, run_id: str | None = None, command: str | None = None,
              plots: bool = True, quiet: bool = False, recipe: dict | None = None,
              store_configs: dict[str, dict] | None = None) -> list[RunResult]:
    """Train every (feature set, fusion) pair; returns one ``RunResult`` per run written.

    ``features``: one comma list (``"bert,mfcc"``) or a list of them (several feature
    sets); ``fusions``: comma list or list of registered names; ``options``: fusion config
    overrides by field name (``{"hidden": "128"}``); ``feature_sets``: in-memory stores by
    feature name (tests, benchmarks), used instead of the cache. Status lines go through
    ``mer.common.console`` (silenced by ``quiet``); printing the results is the caller's.
    """
    with console.quiet(quiet):
        plan = _plan(features, fusions, seeds, options, config, epochs, device, run_id)
        ld = _load(dataset, plan, scheme, protocol, cache, out, manifest, feature_sets, store_configs,
                   command, plots, quiet, recipe)
        written = []
        for reqs in plan.requests:
            for fname in plan.fusions:
                r = _train_pair(plan, ld, reqs, fname)
                if r is not None:
                    written.append(r)
        _report_skips(plan, ld, written)
    return written


def _plan(features, fusions, seeds, options, config, epochs, device, run_id) -> _Plan:
    from mer.train.fusion import FUSIONS

    if run_id is not None:
        from mer.common.paths import check_name

        check_name(run_id, "--run-id")  # a name inside --out, never a path out of it
    tc = copy.deepcopy(config) if config is not None else TrainConfig()
    if epochs is not None:
        tc.epochs = int(epochs)
    tc.device = device or tc.device
    dev = choose(tc.device)
    feature_lists = [features] if isinstance(features, str) else list(features)
    requests = [parse_features(f) for f in feature_lists]
    fusion_names = parse_list(fusions, "--fusion")
    classes_of = {n: FUSIONS.get(n) for n in fusion_names}  # unknown names fail before any work
    check_options(classes_of, options)
    autocast(tc.precision, dev)   # a --precision the device cannot do fails before any work
    seeds = [int(s) for s in (parse_list(seeds, "--seeds") if isinstance(seeds, str) else seeds)]
    plan = _Plan(requests, fusion_names, classes_of, seeds, options, tc, dev, run_id)
    if run_id and plan.n_runs > 1:
        raise UsageError("--run-id names one run; this command trains several (drop --run-id)")
    return plan


def _load(dataset, plan: _Plan, scheme, protocol, cache, out, manifest, feature_sets, store_configs,
          command, plots, quiet, recipe) -> _Loaded:
    tc = plan.tc
    man, sch, labels, classes = load_labels(dataset, scheme, cache, manifest)
    if tc.text_source:  # same rows, transcripts (and their word times) from an asr store
        from mer.extract.asr import apply_text_source

        man = apply_text_source(man, tc.text_source, cache, say=console.info)
    for n, c in plan.classes_of.items():
        check_balanced(c, n, tc, sch.is_regression)
        check_context(c, n, tc.context)
    _check_modalities(man, plan.requests, feature_sets)
    # find_store checks each store against this manifest's modality hashes.
    where = {f: {**(store_configs or {}).get(f, {}), **(tc.stores or {}).get(f, {})}
             for f in set(store_configs or {}) | set(tc.stores or {})}   # a recipe's stores, then --store
    tuners, sets = {}, dict(feature_sets or {})
    if tc.finetune:   # the tuned encoders' inputs: tokenised transcripts instead of their stores
        from mer.train.finetune import finetuners

        tuners = finetuners(tc)
        for feat, tuner in tuners.items():
            sets[feat] = tuner.inputs(man.df, dataset, cache)   # through the input cache (mer.train.inputcache)
    fcache = FeatureCache(dataset, cache, man, sets=sets, where=where)
    variants = DataVariants(labels, classes, man, sch, fcache, dataset)
    return _Loaded(dataset, man, sch, classes, fcache, variants, protocol, Path(out) if out else Path("runs"),
                   command, plots, quiet, recipe, tuners=tuners)


def _train_pair(plan: _Plan, ld: _Loaded, reqs, fname: str) -> RunResult | None:
    """One (feature set, fusion) pair: its inputs, data, folds and run directory; None when
    the fusion cannot be built on these inputs and other pairs remain (noted and counted)."""
    from mer.train.rundir import write_run

    tc, cls = plan.tc, plan.classes_of[fname]
    cfg = model_config(cls, plan.options)
    sources = resolve_inputs(reqs, ld.fcache, fusion_wants(cls, tc.context))
    if _skip(plan, ld, cls, cfg, sources, reqs, fname):
        return None
    # A fine-tuned input is filled with its token ids; the model is still built for the
    # encoder's output (``sources``).
    tuned = {s.key for s in sources if s.feature in ld.tuners}
    if tuned:
        from mer.train.finetune import data_spec

        if getattr(cls, "aligns_audio_to_tokens", False):
            raise UsageError(f"--finetune with --fusion {fname}: its audio is pooled per stored token; train it on a store")
    data_sources = [data_spec(s) if s.key in tuned else s for s in sources]
    key = DataKey(tuple(data_sources), tc.normalize == "speaker", bool(getattr(cls, "aligns_audio_to_tokens", False)))
    data, rep = ld.variants.get(key, ",".join(r.text for r in reqs))
    rep = copy.deepcopy(rep)
    if tuned:
        step = {s.key: ld.tuners[s.feature].step for s in sources if s.key in tuned}
        arrays = {k: (replace(a, raw=True, step=step[k]) if k in tuned else a) for k, a in data.arrays.items()}
        data = replace(data, sources=list(sources), arrays=arrays)
        for feat in dict.fromkeys(s.feature for s in sources if s.key in tuned):
            a = ld.fcache.get(feat).attrs
            if "truncated" in a:
                rep.counts[f"{feat}: transcripts cut to --max-tokens (fine-tuning)"] = int(a["truncated"])
            if a.get("cropped"):
                rep.counts[f"{feat}: audio cut to --max-seconds (fine-tuning)"] = int(a["cropped"])
            for line in a.get("undecodable", []):
                rep.counts.setdefault(f"{feat}: audio that could not be decoded (fine-tuning)", 0)
                rep.counts[f"{feat}: audio that could not be decoded (fine-tuning)"] += 1
                console.info(f"note: {feat}: skipped {line}")
    spec, results, seconds, fold_sets = _fold_loop(plan, ld, cls, cfg, fname, sources, data, rep)
    run_dir, metrics = write_run(
        ld.out_root, plan.run_id, dataset=ld.dataset, manifest=ld.man, scheme=ld.sch, protocol=spec, seeds=plan.seeds,
        fusion=fname, model_cfg=cfg, train_cfg=tc, requests=reqs, sources=sources, fcache=ld.fcache,
        data=data, results=results, report=rep, seconds=seconds, command=ld.command, plots=ld.plots,
        recipe=ld.recipe, fold_sets=fold_sets,
        tuners={f: t for f, t in ld.tuners.items() if any(s.feature == f for s in sources)},
    )
    return RunResult(run_dir, fname, ",".join(r.text for r in reqs), metrics["mean"], metrics.get("paper_fold"))


def _skip(plan: _Plan, ld: _Loaded, cls, cfg, sources, reqs, fname: str) -> bool:
    """Whether this pair is skipped: the fusion cannot be built on these inputs. One pair of
    a grid (attention on text alone, say) must not stop the others; a single pair fails."""
    regression = ld.sch.is_regression
    why = _unbuildable(cls, cfg, sources, n_classes=max(1, len(ld.classes)) if regression else len(ld.classes),
                       classes=None if regression else ld.classes, context=plan.tc.context, regression=regression)
    if why is None:
        return False
    absent = [ld.man.lacks(m) for m in ("audio", "text") if ld.man.lacks(m)]
    if absent:
        why += f"; {absent[0]}, so {fname} cannot run on it"
    if plan.n_runs == 1:
        raise MerError(why)
    note = f"skipped {fname} [{','.join(r.text for r in reqs)}]: {why}"
    ld.skipped.append(note)
    console.info(f"note: {note}")
    return True


def _fold_loop(plan: _Plan, ld: _Loaded, cls, cfg, fname: str, sources, data: TrainData, rep: Report):
    """(protocol spec, fold results in task order, seconds, {seed: folds}): every fold of every seed."""
    from mer.common.progress import progress
    from mer.train.protocols import make_folds, protocol_spec, without_test

    tc = plan.tc
    spec = protocol_spec(ld.dataset, ld.protocol, data.meta)
    strat = None if data.regression else data.y
    results: list[FoldResult] = []
    t0 = time.perf_counter()
    fold_sets = {s: make_folds(spec, data.meta, strat, s, rep, tc.valid_fraction, tc.valid_groups) for s in plan.seeds}
    if tc.score_on == "valid":   # search trials: test rows left out (mer.train.protocols.without_test)
        fold_sets = {s: without_test(f) for s, f in fold_sets.items()}
    total = sum(len(v) for v in fold_sets.values())
    label = f"{fname} [{'+'.join(s.key for s in sources)}]"
    tasks = [(s, fold) for s in plan.seeds for fold in fold_sets[s]]
    with progress(total, f"train {label}", unit="fold", disable=ld.quiet) as bar:
        for r in fold_results(cls, cfg, data, tasks, tc, plan.device):
            results.append(r)
            bar.set_postfix_str(_postfix(results[-1], data.regression))
            bar.update(1)
    return spec, results, time.perf_counter() - t0, fold_sets


def _report_skips(plan: _Plan, ld: _Loaded, written: list) -> None:
    if not ld.skipped:
        return
    if not written:
        raise MerError(f"none of the {plan.n_runs} (feature set, fusion) pairs can be built: " + "; ".join(ld.skipped))
    console.info(f"{len(written)} of {plan.n_runs} runs written; {len(ld.skipped)} skipped:")
    for n in ld.skipped:
        console.info(f"  {n}")


def _check_modalities(man, requests, feature_sets) -> None:
    """Refuse, before any work, a feature of a modality the corpus does not have (bert on a
    path,label CSV): its store cannot exist, and "no store" would not say why."""
    from mer.extract.base import EXTRACTORS

    known = set(EXTRACTORS.names())
    for reqs in requests:
        for r in reqs:
            if feature_sets and r.feature in feature_sets:
                mod = feature_sets[r.feature].modality
            elif r.feature in known:
                mod = EXTRACTORS.get(r.feature).modality
            else:
                continue  # not a registered extractor: find_store will say what is missing
            why = man.lacks(mod)
            if why:
                raise UsageError(f"--features {r.text}: {r.feature} is a {mod} feature, and {why}")


def _unbuildable(cls, cfg, sources, n_classes: int, classes, context: str = "none", regression: bool = False) -> str | None:
    """Why a fusion cannot be built on these inputs (its own check, e.g. "needs at least 1 audio
    feature"), or None. Builds the model once on the input specs, which costs milliseconds."""
    from mer.train.data import input_specs

    try:
        build_model(cls, input_specs(sources), n_classes, cfg, classes, context, regression=regression)
    except MerError as e:
        return str(e)
    return None


def _postfix(r: FoldResult, regression: bool) -> str:
    m = r.metrics
    return f"{r.fold}: mae {m['mae']:.3f} ccc {m['ccc']:.3f}" if regression else f"{r.fold}: ua {m['ua']:.3f} wa {m['accuracy']:.3f}"
