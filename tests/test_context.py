"""Conversation-level training (`--context dialog`, issue 11): dialogue order, batches of
whole dialogues, masking of padded utterances, splits that never cut a dialogue, and that a
context model beats its utterance-level form on data whose emotion depends on context."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from mer.common.errors import UsageError
from mer.train.dialog import DIALOG_MASK, DialogBatcher, dialog_order, group_dialogs, pack_dialogs
from mer.train.fusion import FUSIONS, InputSpec
from mer.train.synthetic_features import synthetic_dialogues
from mer.train.trainer import TrainConfig, run_train

SMALL = {"attention": {"n": "32", "fc": "32", "text_fc": "32", "text_gru": "32"},
         "cross": {"hidden": "32", "layers": "1", "ff": "64", "fc": "32", "heads": "2"}}


@pytest.fixture(scope="module")
def dialogues():
    return synthetic_dialogues(dialogs_per_session=8, seed=0)


def test_dialog_order_reads_start_then_utterance_index_then_manifest_order():
    df = pd.DataFrame({
        "id": ["a_x", "a_y", "a_z", "dia1_utt2", "dia1_utt0", "dia1_utt1", "c_2", "c_1", "solo"],
        "dialog": ["a", "a", "a", "m", "m", "m", "c", "c", None],
        "start": [5.0, 1.0, 3.0, np.nan, np.nan, np.nan, np.nan, 2.0, np.nan],
    })
    codes, rank = dialog_order(df)
    got = [list(df["id"][d]) for d in group_dialogs(np.arange(len(df)), codes, rank)]
    assert got == [["a_y", "a_z", "a_x"],                       # by start
                   ["dia1_utt0", "dia1_utt1", "dia1_utt2"],     # by MELD's utterance index
                   ["c_2", "c_1"],                              # a start missing: manifest order
                   ["solo"]]                                    # no dialogue id: a dialogue of one
    # a subset of rows keeps its dialogues whole and in time order
    assert [list(d) for d in group_dialogs(np.array([2, 5, 0, 4]), codes, rank)] == [[2, 0], [4, 5]]


def _dialog_batcher(dialogues, features: str, wants: str):
    """(training data, a DialogBatcher over it) for the synthetic dialogues."""
    from mer.train.data import Batcher, FeatureCache, Normalizer, build_data, parse_features, resolve_inputs

    man, sets = dialogues
    fc = FeatureCache("iemocap", sets=sets)
    srcs = resolve_inputs(parse_features(features), fc, wants)
    data = build_data(man.df, man.df["emotion"].astype("string"), ["ang", "hap", "sad", "neu"], srcs, fc)
    return data, DialogBatcher(Batcher(data, Normalizer.fit(data, np.arange(len(data)))), data.meta)


def test_dialog_batches_hold_whole_dialogues_in_time_order(dialogues):
    data, db = _dialog_batcher(dialogues, "bert.tokens,mfcc.pooled", "sequence")
    rows = np.arange(len(data))
    seen = []
    for flat, b, y in db.iterate(rows, 3, shuffle=True, rng=np.random.default_rng(0)):
        m = b[DIALOG_MASK]
        assert m.shape[0] <= 3 and int(m.sum()) == len(flat) == len(y) == b["bert.tokens"].shape[0]
        k = 0
        for i in range(m.shape[0]):
            d = flat[k:k + int(m[i].sum())]
            k += len(d)
            assert bool(m[i, : len(d)].all()) and not bool(m[i, len(d):].any())   # left-aligned
            assert data.meta["dialog"].iloc[d].nunique() == 1                      # one dialogue per row
            assert np.all(np.diff(data.meta["start"].iloc[d].to_numpy()) > 0)      # in time order
            seen.append(data.meta["dialog"].iloc[d[0]])
        assert np.array_equal(data.y[flat], y.numpy())
    assert sorted(seen) == sorted(data.meta["dialog"].unique())                    # each dialogue once, whole


def test_pack_dialogs_counts_utterances_not_dialogues():
    """--batch-size counts utterances with --context dialog (issue 18: "batches of 32" held 32
    dialogues): whole dialogues, about batch_size utterances a batch, a long one alone."""
    rng = np.random.default_rng(0)
    lens = [int(x) for x in rng.integers(1, 12, 200)] + [40, 3]
    start = np.r_[0, np.cumsum(lens)]
    dialogs = [np.arange(start[i], start[i + 1]) for i in range(len(lens))]
    batches = pack_dialogs(dialogs, 32)
    assert [d for b in batches for d in b] == dialogs                      # every dialogue once, whole, in order
    sizes = np.array([sum(len(d) for d in b) for b in batches])
    longest = np.array([max(len(d) for d in b) for b in batches])
    for b, n, m in zip(batches[:-1], sizes[:-1], longest[:-1]):            # the last batch takes what is left
        assert n > 32 // 2 and n <= 32 + m / 2 or (len(b) == 1 and m > 32), (n, [len(d) for d in b])
    assert [len(d) for d in batches[-2]] == [40]                            # longer than batch_size: alone
    assert abs(sizes[:-2].mean() - 32) < 3                                  # about batch_size utterances
    # the old reading (batch_size dialogues a batch) would give ~6x fewer batches
    assert len(batches) > 4 * len(dialogs) / 32


def test_dialog_batcher_batches_about_batch_size_utterances(dialogues):
    data, db = _dialog_batcher(dialogues, "mfcc.pooled", "pooled")
    rows = np.arange(len(data))
    longest = max(len(d) for d in db.dialogs(rows))
    bs = 2 * longest
    got = list(db.iterate(rows, bs, shuffle=True, rng=np.random.default_rng(1)))
    assert len(got) == len(db.order(rows, bs, True, np.random.default_rng(1)))
    sizes = [len(flat) for flat, _, _ in got]
    assert sum(sizes) == len(rows)
    assert all(bs - longest / 2 <= n <= bs + longest / 2 for n in sizes[:-1]), sizes
    for flat, b, _ in got:   # whole dialogues: each dialogue of the batch has all its rows there
        d = data.meta["dialog"].iloc[flat]
        total = data.meta["dialog"].value_counts()
        assert all(total[k] == v for k, v in d.value_counts().items())


def _garbage_to_dialogs(h, dmask):
    """to_dialogs with huge random values at the padded utterances instead of zeros."""
    out = torch.randn(*dmask.shape, h.shape[-1]) * 1e3
    out = out.to(h.dtype)
    out[dmask] = h
    return out


@pytest.mark.parametrize("fusion", ["attention", "cross"])
@pytest.mark.parametrize("kind", ["fixed", "ragged"])
def test_padded_utterances_change_nothing(fusion, kind, monkeypatch):
    """A dialogue's outputs are the same alone, batched with a longer dialogue (so padded),
    and with garbage written into its padded utterance slots."""
    import importlib

    torch.manual_seed(0)
    specs = [InputSpec("a", kind, 6, "audio"), InputSpec("t", kind, 5, "text")]
    cls = FUSIONS.get(fusion)
    model = cls(specs, 4, cls.Config(**{k: type(getattr(cls.Config(), k))(v) for k, v in SMALL[fusion].items()}),
                context="dialog").eval()

    def utts(n, T=4):
        b = {}
        for s in specs:
            if kind == "fixed":
                b[s.key] = torch.randn(n, s.dim)
            else:
                b[s.key] = torch.randn(n, T, s.dim)
                m = torch.ones(n, T, dtype=torch.bool)
                m[0, 2:] = False
                b[s.key + ".mask"] = m
        return b

    short, long_ = utts(2), utts(5)
    alone = dict(short, **{DIALOG_MASK: torch.ones(1, 2, dtype=torch.bool)})
    both = {k: torch.cat([short[k], long_[k]]) for k in short}
    m = torch.zeros(2, 5, dtype=torch.bool)
    m[0, :2] = True
    m[1] = True
    both[DIALOG_MASK] = m
    with torch.no_grad():
        ref = model(alone)
        assert ref.shape == (2, 4)
        out = model(both)
        module = importlib.import_module(type(model).__module__)
        monkeypatch.setattr(module, "to_dialogs", _garbage_to_dialogs)
        noisy = model(both)
    torch.testing.assert_close(out[:2], ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(noisy, out, rtol=1e-4, atol=1e-5)


def test_splits_never_cut_a_dialogue(dialogues):
    from mer.train.protocols import make_folds, protocol_spec

    man, _ = dialogues
    df = man.df
    y = df["emotion"].map({"ang": 0, "hap": 1, "sad": 2, "neu": 3}).to_numpy()
    for name in ("loso", "sd", "random"):
        # validation by whole dialogues is what --context dialog gets (valid_by="dialog")
        for f in make_folds(protocol_spec("iemocap", name, df), df, y, seed=1, valid_by="dialog"):
            assert f.valid_from == "dialog"
            parts = [set(df["dialog"].iloc[r]) for r in (f.train, f.valid, f.test)]
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), (name, f.name)
            if name == "random":   # about 80/20 of the utterances, by whole dialogues
                assert 0.12 < len(f.test) / len(df) < 0.28


def test_context_is_refused_for_utterance_level_fusions(dialogues, tmp_path):
    man, sets = dialogues
    with pytest.raises(UsageError) as e:
        run_train("iemocap", "bert,mfcc", "concat", manifest=man, feature_sets=sets, out=tmp_path,
                  config=TrainConfig(epochs=1, context="dialog"), device="cpu", quiet=True)
    assert "concat" in str(e.value) and "attention" in str(e.value) and "cross" in str(e.value)


# (epochs, utterance batch, dialogue batch): enough steps for each to converge, fast on 2 cores
BUDGET = {"attention": (12, 32, 4), "cross": (8, 64, 8)}


@pytest.mark.parametrize("fusion", ["attention", "cross"])
def test_context_model_beats_its_utterance_level_form(fusion, dialogues, tmp_path):
    """LOSO on dialogues where 40% of emotional utterances look neutral in both modalities
    and only their neighbours tell their label: the dialogue model must be >= 5 UA points
    above the same model on single utterances. Predictions stay per utterance."""
    man, sets = dialogues
    ua = {}
    epochs, bs_utt, bs_dlg = BUDGET[fusion]
    for ctx, bs in (("none", bs_utt), ("dialog", bs_dlg)):
        tc = TrainConfig(epochs=epochs, patience=4, batch_size=bs, lr=3e-3, context=ctx)
        (run,) = run_train("iemocap", "bert.mean,mfcc.pooled", fusion, protocol="loso", manifest=man,
                           feature_sets=sets, out=tmp_path / ctx, config=tc, device="cpu", plots=False, quiet=True,
                           options=SMALL[fusion])
        m = json.loads((run / "metrics.json").read_text())
        ua[ctx] = m["mean"]["ua"]
        p = pd.read_csv(run / "predictions.csv")
        assert len(p) == len(man.df) and p["id"].is_unique
        truth = man.df.set_index("id")["emotion"]
        assert (p["true"].to_numpy() == truth.loc[p["id"]].to_numpy()).all()   # outputs aligned to their utterances
        assert len(m["folds"]) == 5 and "confusion" in m["folds"][0]
    assert ua["dialog"] >= ua["none"] + 0.05, ua


def test_predict_takes_whole_dialogues_and_reproduces_the_test_predictions(dialogues, tmp_path):
    """`mer predict` on a dialogue table (rows shuffled) gives a context run's own test
    predictions back: same grouping, same temporal order, same outputs."""
    from mer.train.predict import Item, predict_dialogs
    from mer.train.rundir import load_models

    man, sets = dialogues
    tc = TrainConfig(epochs=2, batch_size=4, context="dialog")
    (run,) = run_train("iemocap", "bert.mean,mfcc.frames", "cross", protocol="random", manifest=man, feature_sets=sets,
                       out=tmp_path, config=tc, device="cpu", plots=False, quiet=True, options=SMALL["cross"])
    cfg, sources, models = load_models(run)
    assert cfg["train"]["context"] == "dialog" and len(models) == 1
    pred = pd.read_csv(run / "predictions.csv").sample(frac=1.0, random_state=0)   # table order means nothing
    df = man.df.set_index("id")
    items, feats = [], []
    for uid in pred["id"]:
        r = df.loc[uid]
        items.append(Item(uid, None, None, float(r["start"]), float(r["end"]), str(r["dialog"])))
        f = {}
        for s in sources:
            fs = sets[s.feature]
            i = int(np.flatnonzero(fs.ids == uid)[0])
            if s.kind == "fixed":
                f.setdefault(s.feature, {})[s.output] = fs.fixed[s.output][i]
            else:
                v, o = fs.ragged[s.output]
                f.setdefault(s.feature, {})[s.output] = v[o[i]:o[i + 1]]
        feats.append(f)
    got = predict_dialogs(items, feats, cfg, sources, models)
    want = pred[[f"p_{c}" for c in cfg["classes"]]].to_numpy(float)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_synthetic_speech_corpus_can_make_emotion_depend_on_context():
    """common.synth with context=0.4: stretches of one emotion, and neutral-looking turns
    (voice and words) labelled by the emotion of the turn before them in the dialogue."""
    from mer.common.synth import SynthConfig
    from mer.common.synth.iemocap import _iemocap_plan

    plan = _iemocap_plan(np.random.default_rng(0), SynthConfig(per_class=12, sessions=2, context=0.4))
    n_ctx = n_emotional = 0
    for _, _, dialogs in plan:
        for _, utts, _ in dialogs:
            for prev, u in zip(utts, utts[1:]):
                if u.kind == "context":
                    n_ctx += 1
                    assert u.voice_emo == u.text_emo == "neu" and u.label == prev.label != "neu"
            n_emotional += sum(u.label not in ("neu", "xxx") for u in utts)
            runs = sum(a.label != b.label for a, b in zip(utts, utts[1:]))
            assert runs < len(utts) / 2          # labels persist: far fewer changes than turns
    assert 0.15 * n_emotional < n_ctx < 0.5 * n_emotional
    plain = _iemocap_plan(np.random.default_rng(0), SynthConfig(per_class=12, sessions=2))
    assert not any(u.kind == "context" for _, _, d in plain for _, utts, _ in d for u in utts)
