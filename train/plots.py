"""Run plots with matplotlib's Agg backend (no display needed): confusion matrix, training
curves, and the bar chart `mer runs --plot` draws to compare runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never tries to open a window
    import matplotlib.pyplot as plt

    return plt


def confusion_png(cm, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised colours (recall per true class) with the raw counts written in."""
    plt = _plt()
    cm = np.asarray(cm, float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * n), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def curves_png(results, path: Path, regression: bool = False, title: str = "") -> Path:
    """Per-epoch training/validation loss and accuracy, one colour per fold (first seed's
    folds drawn; further seeds would only stack identical-looking lines)."""
    plt = _plt()
    first = results[0].seed if results else 0
    res = [r for r in results if r.seed == first]
    ncols = 1 if regression else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 3.8), dpi=110, squeeze=False)
    colors = plt.get_cmap("tab10")
    for i, r in enumerate(res):
        ep = [h["epoch"] for h in r.history]
        c = colors(i % 10)
        axes[0, 0].plot(ep, [h["train_loss"] for h in r.history], "--", color=c, lw=1)
        axes[0, 0].plot(ep, [h["valid_loss"] for h in r.history], "-", color=c, lw=1.3, label=f"{r.fold}")
        axes[0, 0].axvline(r.best_epoch, color=c, lw=0.6, alpha=0.5)
        if not regression:
            axes[0, 1].plot(ep, [h["train_accuracy"] for h in r.history], "--", color=c, lw=1)
            axes[0, 1].plot(ep, [h["valid_accuracy"] for h in r.history], "-", color=c, lw=1.3, label=f"{r.fold}")
    axes[0, 0].set_title("loss (dashed: train, solid: validation)", fontsize=9)
    axes[0, 0].set_xlabel("epoch")
    axes[0, 0].legend(fontsize=7, title="fold (line: best epoch)", title_fontsize=7)
    if not regression:
        axes[0, 1].set_title("accuracy (dashed: train, solid: validation)", fontsize=9)
        axes[0, 1].set_xlabel("epoch")
        axes[0, 1].set_ylim(0, 1)
    if title:
        fig.suptitle(title + (f" (seed {first})" if results else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def runs_bar_png(labels: list[str], means: list[float], stds: list[float], metric: str, path: Path) -> Path:
    """Horizontal bars, one per run, with the std (over folds or seeds) as error bars."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * n), dpi=110)
    y = np.arange(n)[::-1]
    xerr = [0 if (s is None or not np.isfinite(s)) else s for s in stds]
    ax.barh(y, means, xerr=xerr, color="tab:blue", alpha=0.8, capsize=3)
    for yi, m in zip(y, means):  # values inside the bar's left end, clear of the error bars
        ax.text(0.005, yi, f" {m:.3f}", va="center", fontsize=8, color="white", transform=ax.get_yaxis_transform())
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(metric + " (mean, bars: std)")
    if metric not in ("mae",):
        ax.set_xlim(0, max(1.0, max(means, default=0) * 1.1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def layer_weights_png(mixes, path: Path, title: str = "") -> Path:
    """Learned softmax layer weights: one panel per mixed input, one line per fold (and
    seed), layer index on x; the dashed line is the uniform start (1 / layers)."""
    plt = _plt()
    keys = list(mixes[0][2])
    fig, axes = plt.subplots(1, len(keys), figsize=(5.0 * len(keys), 3.4), dpi=110, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, key in zip(axes[0], keys):
        n = len(mixes[0][2][key])
        for i, (seed, fold, lw) in enumerate(mixes):
            ax.plot(range(n), lw[key], "o-", color=colors(i % 10), lw=1.2, ms=3.5,
                    label=f"{fold}" + (f" s{seed}" if len({m[0] for m in mixes}) > 1 else ""))
        ax.axhline(1.0 / n, color="gray", ls="--", lw=0.8)
        ax.set_xticks(range(n))
        ax.set_xlabel("hidden state (0 = embeddings)")
        ax.set_ylabel("softmax weight")
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def study_pngs(study, folder: Path, metric: str) -> list[Path]:
    """`mer tune`'s plots, drawn by Optuna's matplotlib backend: optimisation history,
    parameter importances (fANOVA; needs two finished trials that differ) and parallel
    coordinates. A plot Optuna cannot draw for this study is left out with a note in the
    list's place (printed by the caller), never a half-drawn file."""
    import warnings

    plt = _plt()
    from optuna.visualization import matplotlib as ov

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    label = f"validation {metric}"
    for name, draw in (("history", lambda: ov.plot_optimization_history(study, target_name=label)),
                       ("importances", lambda: ov.plot_param_importances(study)),
                       ("parallel", lambda: ov.plot_parallel_coordinate(study, target_name=label))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # Optuna marks its matplotlib plots experimental
            try:
                ax = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                plt.close("all")
                out.append(f"{name}.png not drawn: {e}")
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(8, 4.8)
        fig.tight_layout()
        p = folder / f"{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        out.append(p)
    return out
