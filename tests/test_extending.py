""""Every extension one file" (issue 17): a throwaway extractor, fusion and corpus, each one
Python file outside the source tree, named in $MER_PLUGINS and nowhere else, show up in the
CLI's choices and run end to end: prepare -> extract -> train.

The commands run in fresh processes: plugins register into the process-wide registries, so
loading them here would leak three fake entries into every later test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch")

EXTRACTOR = '''
from dataclasses import dataclass

import numpy as np

from mer.extract.base import EXTRACTORS, Extractor, ExtractorConfig, OutputSpec


@dataclass
class LoudnessConfig(ExtractorConfig):
    scale: float = 1.0


@EXTRACTORS.register("toyloud")
class Loudness(Extractor):
    """RMS and peak of the waveform: two numbers per utterance."""

    modality = "audio"
    Config = LoudnessConfig
    sample_rate = 16000

    def outputs(self):
        return {"stats": OutputSpec("fixed", 2, description="rms, peak")}

    def process(self, batch):
        s = float(self.config.scale)
        return [{"stats": s * np.array([np.sqrt(np.mean(u.audio ** 2)), np.abs(u.audio).max()], np.float32)}
                for u in batch]
'''

FUSION = '''
from dataclasses import dataclass

import torch
from torch import nn

from mer.train.fusion import FUSIONS


@dataclass
class ToyConfig:
    hidden: int = 8


@FUSIONS.register("toylinear")
class ToyLinear(nn.Module):
    """Every input's vector concatenated, one hidden layer."""

    Config = ToyConfig
    wants = "pooled"

    def __init__(self, inputs, n_out, config=None):
        super().__init__()
        self.keys = [i.key for i in inputs]
        c = config or ToyConfig()
        self.net = nn.Sequential(nn.Linear(sum(i.dim for i in inputs), c.hidden), nn.ReLU(), nn.Linear(c.hidden, n_out))

    def forward(self, batch):
        return self.net(torch.cat([batch[k] for k in self.keys], dim=-1))
'''

CORPUS = '''
from pathlib import Path

from mer.common.datasets import media_row, register

SPEC = {
    "dataset": "toycorpus",
    "raw_labels": {"emotion": ["loud", "soft"]},
    "default_scheme": "loudness",
    "default_protocol": "speakers",
    "schemes": {"loudness": {"description": "loud or soft", "kind": "map", "source": "emotion",
                             "classes": ["loud", "soft"], "map": {"loud": "loud", "soft": "soft"}}},
    "protocols": {"speakers": {"description": "leave one speaker group out", "kind": "group_kfold",
                               "group": "speaker", "k": 2}},
}


@register("toycorpus", "wavs named <speaker>_<label>_<n>.wav in one folder", spec=SPEC)
def scan(root: Path, report, **_):
    rows = []
    for p in sorted(Path(root).glob("*.wav")):
        spk, label, n = p.stem.split("_")
        rows.append(media_row(p.stem, p.resolve(), str(p), text=None, emotion=label, speaker=spk))
    return rows
'''


def _write_corpus(root, per_class: int = 8) -> None:
    import soundfile as sf

    root.mkdir()
    rng = np.random.default_rng(0)
    for spk in ("a", "b", "c", "d"):
        for label, amp in (("loud", 0.5), ("soft", 0.05)):
            for n in range(per_class):
                x = amp * rng.uniform(0.7, 1.3) * np.sin(np.linspace(0, 200 * np.pi, 8000))
                sf.write(str(root / f"{spk}_{label}_{n}.wav"), x.astype(np.float32), 16000)


def _mer(args, env) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", "from mer.common.cli import main; main()", *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"mer {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.slow
def test_a_new_extractor_fusion_and_corpus_need_one_file_each(tmp_path):
    plugins = []
    for name, src in (("toy_extractor", EXTRACTOR), ("toy_fusion", FUSION), ("toy_corpus", CORPUS)):
        p = tmp_path / f"{name}.py"
        p.write_text(textwrap.dedent(src))
        plugins.append(str(p))
    env = {**os.environ, "MER_PLUGINS": os.pathsep.join(plugins)}
    env.pop("MER_CACHE", None)

    # The CLI offers them, from the registries alone.
    assert "toycorpus" in _mer(["prepare", "--help"], env).stdout
    extract_help = _mer(["extract", "--help"], env).stdout
    assert "toyloud" in extract_help and "--toyloud.scale" in extract_help
    assert "toylinear" in _mer(["train", "--help"], env).stdout

    # And they run end to end on a tiny corpus.
    root, cache, runs = tmp_path / "corpus", tmp_path / "cache", tmp_path / "runs"
    _write_corpus(root)
    _mer(["prepare", "-d", "toycorpus", "-r", root, "--cache", cache, "--workers", 1], env)
    _mer(["extract", "-d", "toycorpus", "-f", "toyloud", "--cache", cache], env)
    _mer(["train", "-d", "toycorpus", "-f", "toyloud", "--fusion", "toylinear", "--cache", cache, "--out", runs,
          "--epochs", 30, "--no-plots", "-q"], env)
    (metrics,) = list(runs.rglob("metrics.json"))
    m = json.loads(metrics.read_text())
    assert len(m["folds"]) == 2  # the plugin corpus's own protocol: two speaker groups
    # Loud and soft differ tenfold in RMS: the toy model must have learned it.
    assert m["mean"]["ua"] > 0.9, m["mean"]
