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

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import os

        from opensmile.core.config import config as oscfg
        from opensmile.core.lib import OpenSMILE

        want_lld = bool(self.config.lld)
        opts = self._func._options()
        root = self._func.default_config_root
        opts.pop("sinkLevel", None)
        opts["sink"] = os.path.join(root, oscfg.EXTERNAL_OUTPUT_MULTI_CONFIG)
        opts["sinkLevelLLD"] = "lld"
        opts["sinkLevelFunc"] = "func"
        opts["source"] = os.path.join(root, oscfg.EXTERNAL_INPUT_CONFIG)
        opts["sampleRate"] = self.sample_rate
        opts["nBits"] = 16
        # Same int16 conversion as opensmile.Smile._extract (x * 32768 truncated), so values
        # are identical; clipped first because the library's cast wraps around at +1.0.
        pcm = np.clip(x * 32768.0, -32768, 32767).astype(np.int16)
        func: list[np.ndarray] = []
        lld: list[np.ndarray] = []
        smile = OpenSMILE()
        smile.initialize(config_file=self._func.config_path, options=opts, loglevel=self._func.loglevel, log_file=self._func.logfile, debug=False)
        try:
            smile.external_sink_set_callback_ex("extsinkfunc", lambda d, meta: func.append(d.copy()))
            smile.external_sink_set_callback_ex("extsinklld", (lambda d, meta: lld.append(d.copy())) if want_lld else (lambda d, meta: None))
            smile.external_audio_source_write_data("extsource", bytes(pcm))
            smile.external_audio_source_set_eoi("extsource")
            smile.run()
        finally:
            smile.free()
        if not func:
            raise ValueError("too short for openSMILE: no functionals produced")
        f = np.asarray(func[-1], np.float32).reshape(-1)
        l = np.vstack(lld).astype(np.float32) if want_lld and lld else (np.zeros((0, DIMS[self.feature_set][1]), np.float32) if want_lld else None)
        return f, l

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
