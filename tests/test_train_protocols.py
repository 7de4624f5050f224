"""Protocols: folds from the yaml specs; validation never touches the test fold."""
import numpy as np
import pandas as pd
import pytest

from mer.common.errors import MerError
from mer.common.schemes import protocol
from mer.train.protocols import MIN_VALID_ROWS, make_folds, protocol_spec, resolve_auto


def _df(n=200, seed=0):
    rng = np.random.default_rng(seed)
    sess = rng.integers(1, 6, n)
    g = np.where(rng.random(n) < 0.5, "F", "M")
    split = rng.choice(["train", "dev", "test"], n, p=[0.7, 0.1, 0.2])
    return pd.DataFrame({
        "id": [f"u{i}" for i in range(n)], "session": [f"Ses{s:02d}" for s in sess], "gender": g,
        "speaker": [f"Ses{s:02d}_{x}" for s, x in zip(sess, g)], "split": split,
    }), rng.integers(0, 4, n)


def _disjoint(f):
    assert not (set(f.train) & set(f.valid)) and not (set(f.train) & set(f.test)) and not (set(f.valid) & set(f.test))


def test_loso_five_folds_cover_every_row_once():
    df, y = _df()
    folds = make_folds(protocol("iemocap", "loso"), df, y, seed=0)
    assert [f.name for f in folds] == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(df)))
    for f in folds:
        _disjoint(f)
        assert set(df["session"].iloc[f.test]) == {f.name}
        assert f.name not in set(df["session"].iloc[np.concatenate([f.train, f.valid])])
        # 10% of the training rows, raised to the minimum slice (issue 21)
        n = len(f.train) + len(f.valid)
        assert len(f.valid) == max(round(0.1 * n), min(MIN_VALID_ROWS, n // 3)), (len(f.valid), n)
        assert f.valid_from == "utterance"


def test_si_splits_session5_by_gender_both_ways():
    df, y = _df()
    folds = make_folds(protocol("iemocap", "si"), df, y, seed=0)
    assert [f.name for f in folds] == ["Ses05-F", "Ses05-M"]
    for f in folds:
        _disjoint(f)
        assert "Ses05" not in set(df["session"].iloc[f.train])
        assert set(df["session"].iloc[f.valid]) == set(df["session"].iloc[f.test]) == {"Ses05"}
        assert df["gender"].iloc[f.test].nunique() == 1 and df["gender"].iloc[f.valid].nunique() == 1
    assert set(folds[0].test) == set(folds[1].valid)


def test_random_and_sd_are_stratified_and_seeded():
    df, y = _df(400)
    sd = make_folds(protocol("iemocap", "sd"), df, y, seed=1)[0]
    _disjoint(sd)
    assert (len(sd.train), len(sd.valid), len(sd.test)) == (320, 40, 40)
    # stratified: class shares in test within 3 points of the whole
    for c in range(4):
        assert abs((y[sd.test] == c).mean() - (y == c).mean()) < 0.03
    again = make_folds(protocol("iemocap", "sd"), df, y, seed=1)[0]
    other = make_folds(protocol("iemocap", "sd"), df, y, seed=2)[0]
    assert np.array_equal(sd.test, again.test) and not np.array_equal(sd.test, other.test)
    r = make_folds(protocol("iemocap", "random"), df, y, seed=0)[0]
    assert len(r.test) == 80 and len(r.valid) == 32  # 10% of the 320 training rows for early stopping


def test_official_uses_dev_or_carves_validation():
    df, y = _df()
    meld = make_folds(protocol("meld", "official"), df, y)[0]
    assert set(df["split"].iloc[meld.train]) == {"train"} and set(df["split"].iloc[meld.valid]) == {"dev"}
    assert set(df["split"].iloc[meld.test]) == {"test"}
    slue = {"name": "official", "kind": "official", "splits": {"train": "train", "valid": None, "test": "dev"}}
    f = make_folds(slue, df, y)[0]
    _disjoint(f)
    assert set(df["split"].iloc[np.concatenate([f.train, f.valid])]) == {"train"}


def test_group_kfold_and_auto():
    df, y = _df()
    spec = protocol("csv", "speaker")
    folds = make_folds(spec, df, y, seed=0)
    assert len(folds) == 5
    for f in folds:
        _disjoint(f)
        assert not set(df["speaker"].iloc[f.test]) & set(df["speaker"].iloc[f.train])
    assert resolve_auto({"official": protocol("csv", "official")}, df)["kind"] == "official"
    assert protocol_spec("csv", None, df.drop(columns=["split"]))["kind"] == "group_kfold"
    assert protocol_spec("csv", None, df.drop(columns=["split", "speaker"]))["kind"] == "random"


def test_errors_name_the_problem():
    df, y = _df()
    df.loc[3, "session"] = None
    with pytest.raises(MerError, match="u3"):
        make_folds(protocol("iemocap", "loso"), df, y)


def _short_dialogues(n_sessions=5, dialogs=4, per=16, seed=0):
    """The held-out corpus's layout (issue 21): 4 dialogues of 16 utterances per session,
    each dialogue emotion-themed (mostly one class), 4 classes."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows, y = [], []
    for s in range(1, n_sessions + 1):
        for d in range(dialogs):
            theme = (s + d) % 4
            for u in range(per):
                c = theme if rng.random() < 0.75 else int(rng.integers(4))
                rows.append({"id": f"Ses{s:02d}_d{d}_{u:02d}", "session": f"Ses{s:02d}", "dialog": f"Ses{s:02d}_d{d}",
                             "speaker": f"Ses{s:02d}{'FM'[u % 2]}", "start": float(u)})
                y.append(c)
    return pd.DataFrame(rows), np.array(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("valid_by", ["utterance", "dialog"])
def test_every_fold_validation_slice_holds_every_class(seed, valid_by):
    """Whole-dialogue slices on short, emotion-themed dialogues were 14-17 rows from 2
    dialogues, some classes absent; each fold's slice now holds every class, >= the minimum."""
    from mer.train.protocols import MIN_VALID_PER_CLASS

    df, y = _short_dialogues()
    for f in make_folds(protocol("iemocap", "loso"), df, y, seed=seed, valid_by=valid_by):
        _disjoint(f)
        counts = np.bincount(y[f.valid], minlength=4)
        assert (counts >= MIN_VALID_PER_CLASS).all(), (f.name, counts)
        assert len(f.valid) >= MIN_VALID_ROWS, (f.name, len(f.valid))
        assert f.valid_from == valid_by
        if valid_by == "dialog":
            assert not set(df["dialog"].iloc[f.valid]) & set(df["dialog"].iloc[f.train])


def test_a_slice_too_small_to_trust_is_noted_and_warned(capsys):
    from mer.common.report import Report

    df, y = _df()
    df, y = df.iloc[:40].reset_index(drop=True), y[:40]
    df["session"] = ["Ses01"] * 20 + ["Ses02"] * 20
    rep = Report("t")
    make_folds({"name": "loso", "kind": "group_folds", "group": "session"}, df, y, seed=0, report=rep)
    assert rep.reasons("notes")["small validation slice"] == 2
    assert "too small to trust" in capsys.readouterr().err


# Seed 002's Table 1 (MELD without fear): per class (train, test) after pooling the official splits.
TABLE1 = {"joy": (1846, 462), "anger": (1285, 322), "disgust": (288, 73), "sadness": (801, 201),
          "surprise": (1308, 328), "neutral": (5148, 1288)}


def _meld_like(counts: dict, seed=0):
    """MELD-shaped rows: official split and dialogue columns, labels with the given counts."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)), list(counts.values())))
    n = len(y)
    split = rng.choice(["train", "dev", "test"], n, p=[0.75, 0.08, 0.17])
    dia = rng.integers(0, max(1, n // 9), n)
    df = pd.DataFrame({"id": [f"{s}_dia{d}_utt{i}" for i, (s, d) in enumerate(zip(split, dia))], "split": split,
                       "dialog": [f"{s}_dia{d}" for s, d in zip(split, dia)]})
    return df, y


def test_pooled_80_20_reproduces_seed002_table1_per_class():
    """pooled-80-20 pools MELD's official splits and draws 20% of every class: Table 1's
    10,676 / 2,674 to the row, every class's share within one row of 20%, seeded."""
    counts = {c: a + b for c, (a, b) in TABLE1.items()}
    df, y = _meld_like(counts)
    f = make_folds(protocol("meld", "pooled-80-20"), df, y, seed=0)[0]
    _disjoint(f)
    assert len(f.test) == 2674 and len(f.train) + len(f.valid) == 10676
    for k, (c, (_, n_test)) in enumerate(TABLE1.items()):
        assert (y[f.test] == k).sum() == n_test, c
        n = counts[c]
        assert abs((y[f.test] == k).sum() - 0.2 * n) <= 1 and abs((y[np.r_[f.train, f.valid]] == k).sum() - 0.8 * n) <= 1
    assert set(df["split"].iloc[f.test]) == {"train", "dev", "test"}        # pooled: drawn from every official split
    again = make_folds(protocol("meld", "pooled-80-20"), df, y, seed=0)[0]
    other = make_folds(protocol("meld", "pooled-80-20"), df, y, seed=1)[0]
    assert np.array_equal(again.test, f.test) and not np.array_equal(other.test, f.test)
    # validation carved from the 80 as usual: every class present, test rows never in it
    assert set(y[f.valid]) == set(range(len(TABLE1))) and not set(f.valid) & set(f.test)


@pytest.mark.parametrize("seed", [0, 3])
def test_pooled_80_20_small_corpus_keeps_each_class_within_one_row(seed):
    df, y = _meld_like({"a": 7, "b": 13, "c": 2, "d": 31}, seed)
    f = make_folds(protocol("meld", "pooled-80-20"), df, y, seed=seed)[0]
    _disjoint(f)
    assert len(f.train) + len(f.valid) + len(f.test) == len(df)
    for k in range(4):
        n = int((y == k).sum())
        assert abs((y[f.test] == k).sum() - 0.2 * n) <= 1 and (y[f.test] == k).sum() >= 1, k
    with pytest.raises(MerError, match="classification"):
        make_folds(protocol("meld", "pooled-80-20"), df, None)
