"""Classical baselines as fusions: linear and RBF SVMs, logistic regression and gradient-
boosted trees from scikit-learn, over the pooled vectors of every input (functionals such as
eGeMAPS, pooled embeddings) concatenated, as the field's toolkits (nkululeko, MERBench) run
them. They are registered fusions like the neural ones, so ``mer train``, ``mer compare``
and ``mer tune`` use them with the same protocols, metrics and run directories.

scikit-learn fits each fold in one call (``fit_fold``: the trainer's hook for models without
epochs), on the fold's z-scored training rows. The fitted model is then turned into tensors
(weights, support vectors, tree arrays) held by a ``torch`` module whose forward computes
the same decision values, so weights are saved as safetensors and ``mer predict`` loads them
like any run's: nothing is pickled. Probabilities are a softmax of the decision values
(logistic regression's are its own; the SVMs' and trees' are not calibrated).
Classification only: a regression scheme is refused when the model is built.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mer.common.errors import MerError
from mer.train.fusion import FUSIONS, InputSpec
from mer.train.layers import input_as_vector as pooled


class SklearnFusion(nn.Module):
    """Base: inputs pooled and concatenated; subclasses fit in ``fit_arrays`` and fill buffers."""

    wants = "pooled"
    BUFFERS: tuple[str, ...] = ()   # the fitted arrays, saved as the model's state

    def __init__(self, inputs: list[InputSpec], n_out: int, config=None):
        super().__init__()
        name = type(self).__name__
        if n_out < 2:
            raise MerError(f"{name} classifies; this is a regression scheme (use concat, or a classification scheme)")
        stacks = [i.key for i in inputs if getattr(i, "layers", 1) > 1]
        if stacks:
            raise MerError(f"{name} takes pooled vectors; {', '.join(stacks)} is a stack of encoder layers "
                           f"(pick one layer with --store <feature>.layer=N)")
        self.inputs, self.n_out, self.config = list(inputs), int(n_out), config or self.Config()
        self.dim = sum(i.dim for i in self.inputs)
        # Until fitted, random arrays of the fitted shapes (torch's generator): the module is
        # usable at once (shape and padding tests run on every fusion) and a fit replaces them.
        self.unfitted()

    def features(self, batch: dict) -> torch.Tensor:
        return torch.cat([pooled(batch, i) for i in self.inputs], dim=-1)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        # The buffers' shapes come from the fit (support vectors, trees): take them as saved.
        from torch.nn.modules.module import _IncompatibleKeys

        missing = [k for k in self.BUFFERS if k not in state]
        unexpected = [k for k in state if k not in self.BUFFERS]
        if strict and (missing or unexpected):
            raise MerError(f"{type(self).__name__}: weights do not fit (missing {missing}, unexpected {unexpected})")
        for k in self.BUFFERS:
            if k in state:
                self._buffers[k] = state[k].detach().clone()
        return _IncompatibleKeys(missing, unexpected)

    def _set(self, **arrays) -> None:
        for k, v in arrays.items():
            self._buffers[k] = v.contiguous() if torch.is_tensor(v) else torch.as_tensor(np.ascontiguousarray(v))

    @staticmethod
    def _two_class(w: np.ndarray) -> np.ndarray:
        # scikit-learn gives one decision value s for two classes (s > 0: the second class);
        # logits [0, s] make softmax the logistic of s and argmax the same decision.
        return np.concatenate([np.zeros_like(w), w], 0) if w.shape[0] == 1 else w

    # ------------------------------------------------------------------ the trainer's hook
    @classmethod
    def fit_fold(cls, cfg, data, fold, seed: int, tc, device: str):
        """One fold: fit on the z-scored training rows, then validation and test metrics as
        the neural trainer computes them (``fold.test`` is the validation split in search
        trials, mer.train.protocols.without_test). Runs on the CPU whatever ``device``."""
        from mer.train.callbacks import epoch_end
        from mer.train.data import Batcher, Normalizer
        from mer.train.fusion import build_model
        from mer.train.metrics import classification_metrics
        from mer.train.folds import FoldResult, evaluate

        t0 = time.perf_counter()
        if data.regression:
            raise MerError(f"{cls.__name__} classifies; this is a regression scheme")
        norm = Normalizer.fit(data, fold.train)
        batcher = Batcher(data, norm, "cpu", tc.max_len, tc.bucket, tc.batch_frames)
        model = build_model(cls, data.specs, len(data.classes), cfg, data.classes, tc.context)
        X, y = model.collect(batcher, fold.train, tc.batch_size)
        if len(np.unique(y)) < 2:
            raise MerError(f"{cls.__name__}: fold {fold.name} has one class only among its training rows")
        # --balanced: class weights from the training rows, as the neural models' loss takes them
        model.fit_arrays(X, y, seed, tc.balanced)
        model.eval()

        def ce(logits, target):
            return nn.functional.cross_entropy(logits, target)

        def scored(rows):
            loss, out, _ = evaluate(model, batcher, rows, ce, False, tc.batch_size)
            return loss, out, classification_metrics(data.y[rows], out.argmax(1), data.classes)

        tr_loss, _, tm = scored(fold.train)
        v_loss, _, vm = scored(fold.valid)
        h = {"epoch": 1, "train_loss": tr_loss, "valid_loss": v_loss, "train_rows": int(len(fold.train)),
             "train_accuracy": tm["accuracy"], "valid_accuracy": vm["accuracy"], "valid_ua": vm["ua"]}
        epoch_end(seed, fold.name, h)
        t_loss, t_out, m = scored(fold.test)
        m.update(test_loss=t_loss, best_epoch=1, epochs_run=1)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        return FoldResult(seed, fold.name, m, np.asarray(fold.test), t_out, [h], state, norm, 1, [],
                          time.perf_counter() - t0)

    def collect(self, batcher, rows, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(pooled inputs, labels) of ``rows``, in the batcher's order (the fit does not care)."""
        xs, ys = [], []
        with torch.no_grad():
            for _, b, y in batcher.iterate(np.asarray(rows), batch_size):
                xs.append(self.features(b).float().cpu().numpy())
                ys.append(y.cpu().numpy())
        return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


# ----------------------------------------------------------------------------- linear models
class _Linear(SklearnFusion):
    BUFFERS = ("weight", "bias")

    def fit_arrays(self, X: np.ndarray, y: np.ndarray, seed: int, balanced: bool = False) -> None:
        est = self.estimator(seed, "balanced" if balanced else None).fit(X, y)
        w = np.zeros((self.n_out, X.shape[1]))
        b = np.zeros(self.n_out)
        # Classes absent from this fold's training rows get no row in coef_: they keep
        # logits far below any seen class, so they are never predicted.
        seen = est.classes_.astype(int)
        cw, cb = self._two_class(np.atleast_2d(est.coef_)), self._two_class(np.atleast_2d(est.intercept_).T)[:, 0]
        w[seen], b[:] = cw, -1e4
        b[seen] = cb
        self._set(weight=w.astype(np.float32), bias=b.astype(np.float32))

    def unfitted(self) -> None:
        self._set(weight=torch.randn(self.n_out, self.dim), bias=torch.zeros(self.n_out))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.features(batch) @ self.weight.T + self.bias


@dataclass
class LinearSVMConfig:
    C: float = 1.0            # inverse regularisation strength
    max_iter: int = 5000


@FUSIONS.register("svm-linear")
class LinearSVMFusion(_Linear):
    """Linear SVM (scikit-learn LinearSVC, one-vs-rest) over the pooled inputs."""

    Config = LinearSVMConfig
    tune_space = {"C": "1e-3:1e2:log"}   # mer tune's default space

    def estimator(self, seed: int, class_weight):
        from sklearn.svm import LinearSVC

        c = self.config
        return LinearSVC(C=c.C, max_iter=c.max_iter, random_state=seed, class_weight=class_weight)


@dataclass
class LogRegConfig:
    C: float = 1.0
    max_iter: int = 2000


@FUSIONS.register("logreg")
class LogRegFusion(_Linear):
    """Multinomial logistic regression (scikit-learn, lbfgs) over the pooled inputs."""

    Config = LogRegConfig
    tune_space = {"C": "1e-3:1e2:log"}

    def estimator(self, seed: int, class_weight):
        from sklearn.linear_model import LogisticRegression

        c = self.config
        return LogisticRegression(C=c.C, max_iter=c.max_iter, random_state=seed, class_weight=class_weight)


# ----------------------------------------------------------------------------- RBF SVM
@dataclass
class RbfSVMConfig:
    C: float = 1.0
    gamma: float = 0.0        # kernel width; 0: scikit-learn's "scale", 1 / (dims x variance)


@FUSIONS.register("svm-rbf")
class RbfSVMFusion(SklearnFusion):
    """RBF-kernel SVM, one binary SVC per class (one-vs-rest) over the pooled inputs.

    One-vs-rest rather than SVC's own one-vs-one: each class's decision value is then one
    kernel expansion, sum_k a_ck exp(-gamma |x - sv_k|^2) + b_c, which the forward computes."""

    Config = RbfSVMConfig
    tune_space = {"C": "1e-2:1e3:log", "gamma": "1e-4:1e0:log"}
    BUFFERS = ("support", "coef", "bias", "gamma")

    def fit_arrays(self, X: np.ndarray, y: np.ndarray, seed: int, balanced: bool = False) -> None:
        from sklearn.svm import SVC

        c = self.config
        gamma = c.gamma or 1.0 / (X.shape[1] * max(float(X.var()), 1e-12))
        svs, coefs, bias = [], [], np.full(self.n_out, -1e4)
        for k in range(self.n_out):
            t = (y == k).astype(int)
            if t.sum() == 0:
                continue   # a class absent from the training rows is never predicted
            est = SVC(C=c.C, kernel="rbf", gamma=gamma, random_state=seed,
                      class_weight="balanced" if balanced else None).fit(X, t)
            a = np.zeros((self.n_out, len(est.support_vectors_)))
            a[k] = est.dual_coef_[0]
            svs.append(est.support_vectors_)
            coefs.append(a)
            bias[k] = est.intercept_[0]
        self._set(support=np.concatenate(svs).astype(np.float32), coef=np.concatenate(coefs, 1).astype(np.float32),
                  bias=bias.astype(np.float32), gamma=np.array(gamma, np.float32))

    def unfitted(self) -> None:
        self._set(support=torch.randn(8, self.dim), coef=torch.randn(self.n_out, 8), bias=torch.zeros(self.n_out),
                  gamma=torch.tensor(1.0 / self.dim))

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.features(batch)
        d2 = (x * x).sum(-1, keepdim=True) - 2 * x @ self.support.T + (self.support * self.support).sum(-1)
        return torch.exp(-self.gamma * d2.clamp_min(0)) @ self.coef.T + self.bias


# ----------------------------------------------------------------------------- boosted trees
@dataclass
class GBTConfig:
    n_estimators: int = 100
    learning_rate: float = 0.1
    max_depth: int = 3
    subsample: float = 1.0


@FUSIONS.register("gbt")
class GBTFusion(SklearnFusion):
    """Gradient-boosted trees (scikit-learn GradientBoostingClassifier) over the pooled inputs.

    The trees are stored as arrays (feature, threshold, children, leaf value; leaves point to
    themselves) and the forward walks all of them at once for ``max_depth`` steps."""

    Config = GBTConfig
    tune_space = {"n_estimators": "50:300", "learning_rate": "0.02:0.3:log", "max_depth": "2:5", "subsample": "0.6:1.0"}
    BUFFERS = ("feature", "threshold", "left", "right", "value", "column", "base", "depth", "seen")

    def fit_arrays(self, X: np.ndarray, y: np.ndarray, seed: int, balanced: bool = False) -> None:
        from sklearn.ensemble import GradientBoostingClassifier
        from sklearn.utils.class_weight import compute_sample_weight

        c = self.config
        est = GradientBoostingClassifier(n_estimators=c.n_estimators, learning_rate=c.learning_rate,
                                         max_depth=c.max_depth, subsample=c.subsample, random_state=seed)
        est.fit(X, y, sample_weight=compute_sample_weight("balanced", y) if balanced else None)
        trees = est.estimators_   # [n_estimators, K] regression trees (K = 1 for two classes)
        n_nodes = max(t.tree_.node_count for t in trees.ravel())
        T = trees.size
        feat = np.zeros((T, n_nodes), np.int64)
        thr = np.full((T, n_nodes), np.inf)
        left = np.tile(np.arange(n_nodes), (T, 1))
        right = left.copy()
        value = np.zeros((T, n_nodes))
        column = np.zeros(T, np.int64)
        for i, t in enumerate(trees.ravel()):
            tr, n = t.tree_, t.tree_.node_count
            inner = tr.children_left[:n] >= 0
            feat[i, :n] = np.where(inner, tr.feature[:n], 0)
            thr[i, :n] = np.where(inner, tr.threshold[:n], np.inf)
            left[i, :n] = np.where(inner, tr.children_left[:n], np.arange(n))
            right[i, :n] = np.where(inner, tr.children_right[:n], np.arange(n))
            value[i, :n] = tr.value[:n, 0, 0] * est.learning_rate
            column[i] = i % trees.shape[1]
        # The initial (prior) decision values: what decision_function adds to the trees' sum.
        self._set(feature=feat, threshold=thr, left=left, right=right, value=value.astype(np.float32),
                  column=column, base=np.zeros(trees.shape[1], np.float32),
                  depth=np.array(max(t.tree_.max_depth for t in trees.ravel()), np.int64))
        raw = np.atleast_2d(est.decision_function(X[:1]).T).T
        self._set(base=(raw[0] - self._tree_sum(torch.as_tensor(X[:1], dtype=torch.float32)).numpy()[0]).astype(np.float32))
        seen = est.classes_.astype(int)
        self._set(seen=seen)

    def unfitted(self) -> None:
        # one stump per class on a random input dimension
        k = self.n_out
        self._set(feature=torch.randint(0, self.dim, (k, 3)), threshold=torch.zeros(k, 3, dtype=torch.float64),
                  left=torch.tensor([1, 1, 2]).repeat(k, 1), right=torch.tensor([2, 1, 2]).repeat(k, 1),
                  value=torch.randn(k, 3), column=torch.arange(k), base=torch.zeros(k), depth=torch.tensor(1),
                  seen=torch.arange(k))

    def _tree_sum(self, x: torch.Tensor) -> torch.Tensor:
        # float64 comparisons against float64 thresholds: scikit-learn compares float32
        # inputs with thresholds halfway between float32 values, which a float32 threshold
        # could round onto one of them.
        x = x.double()
        B, (T, _) = x.shape[0], self.feature.shape
        node = torch.zeros(B, T, dtype=torch.int64, device=x.device)
        for _ in range(int(self.depth)):
            f = self.feature.gather(1, node.T).T                    # [B, T] feature tested at each tree's node
            go_left = x.gather(1, f) <= self.threshold.gather(1, node.T).T
            node = torch.where(go_left, self.left.gather(1, node.T).T, self.right.gather(1, node.T).T)
        leaf = self.value.gather(1, node.T).T                       # [B, T]
        out = torch.zeros(B, self.base.shape[0], dtype=leaf.dtype, device=x.device)
        return out.index_add_(1, self.column, leaf)

    def forward(self, batch: dict) -> torch.Tensor:
        raw = self._tree_sum(self.features(batch)) + self.base
        raw = torch.cat([torch.zeros_like(raw), raw], 1) if raw.shape[1] == 1 else raw
        if raw.shape[1] == self.n_out:
            return raw
        # classes absent from the fold's training rows: never predicted
        full = torch.full((raw.shape[0], self.n_out), -1e4, dtype=raw.dtype, device=raw.device)
        full[:, self.seen] = raw
        return full
