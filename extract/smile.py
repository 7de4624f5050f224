"""openSMILE feature sets (eGeMAPSv02, GeMAPSv01b, ComParE_2016) via the `opensmile` package.

Functionals and frame-level LLDs come out of ONE openSMILE pass per utterance: the package's
own multi-sink output config (``standard_external_data_output_multi.conf.inc``) attaches an
external sink to the ``lld`` level and another to the ``func`` level of the same graph.
``opensmile.Smile.process_signal`` would need two passes (one per feature level) for the
same numbers; the tests check that ours equals what it returns.

openSMILE is CPU-only and single-threaded per instance, so the engine runs it on CPU
worker processes in parallel.
"""
from __future__ import annotations

import os
import threading
from ctypes import memmove
from dataclasses import dataclass

import numpy as np

from mer.extract.base import EXTRACTORS, Extractor, ExtractorConfig, OutputSpec

# Known sizes (opensmile 2.6); checked against the library at setup() so a change is loud.
DIMS = {
    "eGeMAPSv02": (88, 25),
    "GeMAPSv01b": (62, 18),
    "ComParE_2016": (6373, 65),
}


@dataclass
class SmileConfig(ExtractorConfig):
    sample_rate: int = 16000
    lld: bool = True          # also store the frame-level low-level descriptors


@dataclass
class CompareConfig(SmileConfig):
    # ComParE LLDs are 65 x 100 per second: kept off by default, the 6,373 functionals are
    # what papers use (seed 004).
    lld: bool = False


class _Smile(Extractor):
    modality = "audio"
    uses_gpu = False
    preload = ("opensmile",)  # imported once for all local workers (engine)
    feature_set: str = ""
    Config = SmileConfig

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self.sample_rate = int(self.config.sample_rate)
        self._func = None
        self._tls = threading.local()

    def setup(self) -> None:
        import opensmile

        fs = getattr(opensmile.FeatureSet, self.feature_set)
        self._func = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals)
        self._lld = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        nf, nl = len(self._func.feature_names), len(self._lld.feature_names)
        if (nf, nl) != DIMS[self.feature_set]:
            from mer.common.errors import MerError

            raise MerError(f"{self.name}: openSMILE {opensmile.__version__} gives {nf} functionals / {nl} LLDs, expected {DIMS[self.feature_set]}")

    def versions(self) -> dict[str, str]:
        import opensmile

        return {"opensmile": opensmile.__version__, "numpy": np.__version__}

    def identity(self) -> dict:
        return {"feature_set": self.feature_set}

    def outputs(self):
        nf, nl = DIMS[self.feature_set]
        out = {"functionals": OutputSpec("fixed", nf, None, "float32", f"openSMILE {self.feature_set} functionals")}
        if self.config.lld:
            out["lld"] = OutputSpec("ragged", nl, 100.0, "float32", f"openSMILE {self.feature_set} low-level descriptors per 10 ms frame")
        return out

    def _runner(self) -> "_SmileRunner":
        # One openSMILE instance per thread, initialized once and reset between utterances:
        # parsing the config, building the component graph and freeing it took 8.5 ms per
        # utterance against 3.4 ms for a reset (a 3 s utterance takes ~45 ms to process).
        # Per thread because a Dask worker may run tasks in several threads on one extractor.
        r = getattr(self._tls, "runner", None)
        if r is None:
            r = self._tls.runner = _SmileRunner(self)
        return r

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # Same int16 conversion as opensmile.Smile._extract (x * 32768 truncated), so values
        # are identical; clipped first because the library's cast wraps around at +1.0.
        pcm = np.clip(x * 32768.0, -32768, 32767).astype(np.int16)
        try:
            return self._runner().run(pcm)
        except BaseException:
            # An instance that failed mid-run is in an unknown state: the next utterance
            # gets a fresh one.
            r = getattr(self._tls, "runner", None)
            self._tls.runner = None
            if r is not None:
                r.close()
            raise

    def process(self, batch):
        if self._func is None:
            self.setup()
        res = []
        for u in batch:
            f, l = self._run(u.audio)
            d = {"functionals": f}
            if l is not None:
                d["lld"] = l
            res.append(d)
        return res


@EXTRACTORS.register("egemaps")
class EGeMAPS(_Smile):
    """eGeMAPSv02: 88 functionals, 25 LLDs per frame."""

    name = "egemaps"
    feature_set = "eGeMAPSv02"


@EXTRACTORS.register("gemaps")
class GeMAPS(_Smile):
    """GeMAPSv01b: 62 functionals, 18 LLDs per frame."""

    name = "gemaps"
    feature_set = "GeMAPSv01b"


@EXTRACTORS.register("compare")
class ComParE(_Smile):
    """ComParE_2016: 6,373 functionals (65 LLDs per frame with --compare.lld true)."""

    name = "compare"
    feature_set = "ComParE_2016"
    Config = CompareConfig


class _SmileRunner:
    """One reusable openSMILE instance with the multi-sink graph (functionals + LLDs).

    ``run`` feeds one utterance, collects both levels, and resets the instance for the next
    one (``smile_reset``: the tests check that a reused instance gives exactly what a fresh
    ``opensmile.Smile`` gives). Frames arrive one per callback; the callbacks copy them
    straight into a preallocated buffer (``memmove``) instead of wrapping each frame in a
    numpy array, which cost more than the copy itself at 100 frames per second.
    """

    def __init__(self, ext: _Smile):
        from opensmile.core.config import config as oscfg
        from opensmile.core.lib import ExternalSinkCallback, OpenSMILE, smileapi

        self._api = smileapi
        func = ext._func
        opts = func._options()
        root = func.default_config_root
        opts.pop("sinkLevel", None)
        opts["sink"] = os.path.join(root, oscfg.EXTERNAL_OUTPUT_MULTI_CONFIG)
        opts["sinkLevelLLD"] = "lld"
        opts["sinkLevelFunc"] = "func"
        opts["source"] = os.path.join(root, oscfg.EXTERNAL_INPUT_CONFIG)
        opts["sampleRate"] = ext.sample_rate
        opts["nBits"] = 16
        self.nf, self.nl = DIMS[ext.feature_set]
        self.want_lld = bool(ext.config.lld)
        self.rate = ext.sample_rate
        self.smile = OpenSMILE()
        self.smile.initialize(config_file=func.config_path, options=opts, loglevel=func.loglevel, log_file=func.logfile, debug=False)
        self.used = False
        self.func = np.zeros(self.nf, np.float32)
        self._func_addr = self.func.ctypes.data  # an int: .ctypes builds an object per call
        self.n_func = 0
        self._set_lld(np.zeros((0, self.nl), np.float32))
        self.n_lld = 0
        self.bad_size: int | None = None
        # Kept as attributes: ctypes callbacks must outlive their registration.
        self._cb_func = ExternalSinkCallback(self._on_func)
        self._cb_lld = ExternalSinkCallback(self._on_lld)

    def _set_lld(self, buf: np.ndarray) -> None:
        self.lld = buf
        self._lld_addr = buf.ctypes.data

    def _on_func(self, data, n, _param):
        if n != self.nf:
            self.bad_size = int(n)
            return 1
        memmove(self._func_addr, data, 4 * n)
        self.n_func += 1
        return 1

    def _on_lld(self, data, n, _param):
        if not self.want_lld:
            return 1
        if n != self.nl:
            self.bad_size = int(n)
            return 1
        k = self.n_lld
        if k == len(self.lld):  # more frames than foreseen: grow (rare; see run)
            self._set_lld(np.concatenate([self.lld, np.zeros((max(64, k), self.nl), np.float32)]))
        memmove(self._lld_addr + 4 * n * k, data, 4 * n)
        self.n_lld = k + 1
        return 1

    def run(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        s = self.smile
        if self.used:
            s.reset()  # after reset, callbacks must be registered again (SMILEapi contract)
        self.used = True
        for comp, cb in (("extsinkfunc", self._cb_func), ("extsinklld", self._cb_lld)):
            s._check_smile_result(self._api.smile_extsink_set_data_callback(s._smileobj, comp.encode(), cb, None))
        self.n_func, self.n_lld, self.bad_size = 0, 0, None
        # 10 ms frames: at most one per 160 samples at 16 kHz, plus a few at the edges.
        cap = len(pcm) * 100 // self.rate + 16
        if len(self.lld) < cap:
            self._set_lld(np.zeros((cap, self.nl), np.float32))
        s.external_audio_source_write_data("extsource", bytes(pcm))
        s.external_audio_source_set_eoi("extsource")
        s.run()
        if self.bad_size is not None:
            raise ValueError(f"openSMILE wrote vectors of {self.bad_size} values, expected {self.nf} functionals / {self.nl} LLDs")
        if not self.n_func:
            raise ValueError("too short for openSMILE: no functionals produced")
        f = self.func.copy()
        l = self.lld[: self.n_lld].copy() if self.want_lld else None
        return f, l

    def close(self) -> None:
        try:
            self.smile.free()
        except Exception:
            pass
