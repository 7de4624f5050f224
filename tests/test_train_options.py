"""Training options from the command line: --optimizer, --weight-decay, --grad-clip, --set
validation and --balanced for every model (issue 11)."""
import json

import numpy as np
import pytest
import yaml

from mer.common.cli import main
from mer.common.errors import UsageError
from mer.train.synthetic_features import synthetic
from mer.train.trainer import TrainConfig, run_train


@pytest.fixture(scope="module")
def corpus():
    return synthetic(200, seed=3, text_dim=8, audio_dim=8, noise=0.6, ragged=False)


def _run(corpus, tmp_path, fusion="concat", options=None, **tc):
    man, sets = corpus
    cfg = TrainConfig(**{"epochs": 3, "patience": 3, "batch_size": 32, **tc})
    (run,) = run_train("iemocap", "bert,mfcc", fusion, protocol="sd", manifest=man, feature_sets=sets, out=tmp_path,
                       config=cfg, device="cpu", plots=False, quiet=True, options=options)
    return run


def test_unknown_set_key_is_an_error_naming_the_valid_ones(corpus, tmp_path):
    with pytest.raises(UsageError) as e:
        _run(corpus, tmp_path, "concat", {"hiddne": "32"})
    msg = str(e.value)
    assert "hiddne" in msg and "hidden" in msg and "concat" in msg
    # a key that one of several fusions has applies to that one and is accepted
    man, sets = corpus
    runs = run_train("iemocap", "bert,mfcc", "concat,cross", protocol="sd", manifest=man, feature_sets=sets,
                     out=tmp_path, config=TrainConfig(epochs=1, batch_size=64), device="cpu", plots=False,
                     quiet=True, options={"heads": "2", "hidden": "16"})
    cfgs = [yaml.safe_load((r / "config.yaml").read_text()) for r in runs]
    assert cfgs[1]["model"]["heads"] == 2 and "heads" not in cfgs[0]["model"]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_optimizer_weight_decay_and_clip_are_used_and_recorded(corpus, tmp_path, name, monkeypatch):
    import torch

    seen = {}
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        seen["clip"] = max_norm
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run = _run(corpus, tmp_path, optimizer=name, weight_decay=3e-4, grad_clip=1.5, lr=1e-2)
    tc = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (tc["optimizer"], tc["weight_decay"], tc["grad_clip"]) == (name, 3e-4, 1.5)
    assert seen["clip"] == 1.5
    from mer.train.trainer import make_optimizer

    opt = make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], 0.1, 3e-4)
    assert type(opt).__name__ == {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}[name]
    assert opt.param_groups[0]["weight_decay"] == 3e-4


def test_grad_clip_zero_disables_clipping(corpus, tmp_path, monkeypatch):
    import torch

    called = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: called.append(1))
    _run(corpus, tmp_path, grad_clip=0.0)
    assert not called


def test_cli_has_the_options_and_refuses_unknown_optimizer(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "-d", "iemocap", "-f", "bert", "--optimizer", "rmsprop", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "rmsprop" in err and "adamw" in err


def test_balanced_reaches_a_model_with_its_own_loss(corpus, tmp_path, monkeypatch):
    """hierarchical has its own loss: --balanced gives it the class counts of the training rows."""
    from mer.train.models_hier import HierarchicalFusion

    seen = []
    real = HierarchicalFusion.loss

    def spy(self, logits, y, class_counts=None):
        seen.append(None if class_counts is None else np.asarray(class_counts).copy())
        return real(self, logits, y, class_counts=class_counts)

    monkeypatch.setattr(HierarchicalFusion, "loss", spy)
    _run(corpus, tmp_path, "hierarchical", {"hidden": "16", "fc": "16"}, balanced=True, epochs=1)
    assert seen and all(c is not None and c.sum() > 100 for c in seen)


def test_balanced_loss_weights_rare_classes_up():
    import torch

    from mer.train.layers import balanced_weights
    from mer.train.models_hier import HierarchicalFusion
    from mer.train.fusion import InputSpec

    np.testing.assert_allclose(balanced_weights([30, 10, 0]), [40 / 90, 40 / 30, 0.0])
    specs = [InputSpec("a", "fixed", 4, "audio"), InputSpec("t", "fixed", 4, "text")]
    m = HierarchicalFusion(specs, 3, classes=["ang", "neu", "sad"])
    torch.manual_seed(0)
    logits, y = torch.randn(6, m.n_logits), torch.tensor([0, 1, 1, 1, 1, 2])
    plain, weighted = m.loss(logits, y), m.loss(logits, y, class_counts=[1, 4, 1])
    assert torch.isfinite(weighted) and not torch.allclose(plain, weighted)
    # weights depend on class shares only
    assert torch.allclose(m.loss(logits, y, class_counts=[2, 8, 2]), weighted)


def test_balanced_refused_for_regression_and_models_without_weights(corpus, tmp_path):
    from mer.train.trainer import check_balanced

    class OwnLoss:
        def loss(self, logits, y):
            return logits.sum()

    with pytest.raises(UsageError, match="own loss"):
        check_balanced(OwnLoss, "custom", TrainConfig(balanced=True), False)
    with pytest.raises(UsageError, match="regression"):
        check_balanced(object, "concat", TrainConfig(balanced=True), True)
    check_balanced(OwnLoss, "custom", TrainConfig(balanced=False), False)
