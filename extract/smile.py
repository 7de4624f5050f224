"""openSMILE feature sets via the `opensmile` package: every set it ships, and any .conf file.

Names (``--features``), one per set of ``opensmile.FeatureSet`` in opensmile 2.6 (its
config folder ``opensmile/core/config``), functionals / LLDs per 10 ms frame:

- ``egemaps`` eGeMAPSv02 (88 / 25), ``egemaps_v01b`` (88 / 23), ``egemaps_v01a`` (88 / 23)
- ``gemaps`` GeMAPSv01b (62 / 18), ``gemaps_v01a`` (62 / 18)
- ``compare`` ComParE_2016 (6,373 / 65)
- ``emobase`` (988 / 26)
- ``is09`` IS09_emotion (384 / 16), ``is10`` IS10_paraling_compat (1,582 / 38),
  ``is11`` IS11_speaker_state (4,368 / 59), ``is12`` IS12_speaker_trait_compat (6,125 / 64),
  ``is13`` IS13_ComParE (6,373 / 65)
- ``smile``: any openSMILE config the user points to (``--smile.config PATH``), e.g.
  openSMILE's ``config/misc/emo_large.conf`` (6,552 functionals, seed 004). Its text and the
  text of every file it includes are hashed into the store key, so editing the file (or an
  included one) makes a new store.

Functionals and frame-level LLDs come out of ONE openSMILE pass per utterance: the package's
own multi-sink output config (``standard_external_data_output_multi.conf.inc``) attaches an
external sink to the ``lld`` level and another to the ``func`` level of the same graph.
``opensmile.Smile.process_signal`` would need two passes (one per feature level) for the
same numbers; the tests check that ours equals what it returns.

openSMILE is CPU-only and single-threaded per instance, so the engine runs it on CPU
worker processes in parallel.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from ctypes import memmove
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, UsageError
from mer.extract.base import EXTRACTORS, Extractor, ExtractorConfig, InputError, OutputSpec

# mer name -> (opensmile.FeatureSet member, functionals, LLDs, LLDs stored by default).
# Sizes as opensmile 2.6 gives them; checked against the library at setup() so a change is
# loud. Large sets keep LLDs off by default: their functionals are what papers use.
SETS = {
    "egemaps": ("eGeMAPSv02", 88, 25, True),
    "egemaps_v01b": ("eGeMAPSv01b", 88, 23, True),
    "egemaps_v01a": ("eGeMAPSv01a", 88, 23, True),
    "gemaps": ("GeMAPSv01b", 62, 18, True),
    "gemaps_v01a": ("GeMAPSv01a", 62, 18, True),
    "compare": ("ComParE_2016", 6373, 65, False),
    "emobase": ("emobase", 988, 26, True),
    "is09": ("IS09", 384, 16, True),
    "is10": ("IS10", 1582, 38, False),
    "is11": ("IS11", 4368, 59, False),
    "is12": ("IS12", 6125, 64, False),
    "is13": ("IS13", 6373, 65, False),
}
DIMS = {fs: (nf, nl) for fs, nf, nl, _ in SETS.values()}
LLD_RATE = 100.0  # every shipped set: 10 ms frame step

# The two placeholders opensmile-python fills with its external audio source and sinks; a
# config run through the package must contain both (emo_large.conf as released reads a
# wave file and writes ARFF instead: see the README for the two-line change).
SOURCE_PLACEHOLDER = "\\cm[source{?}"
SINK_PLACEHOLDER = "\\cm[sink{?}"


@dataclass
class SmileConfig(ExtractorConfig):
    sample_rate: int = 16000
    lld: bool = True          # also store the frame-level low-level descriptors


@dataclass
class LargeSmileConfig(SmileConfig):
    # ComParE-sized sets have 65 LLDs x 100 per second: off by default.
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

    # What the runner needs: an opensmile.Smile for options/config path, the level names,
    # the sizes. Built-in sets know their sizes; the generic `smile` asks the library.
    lld_level = "lld"
    func_level = "func"

    def _feature_set_arg(self):
        import opensmile

        return getattr(opensmile.FeatureSet, self.feature_set)

    def dims(self) -> tuple[int, int]:
        return DIMS[self.feature_set]

    def lld_rate(self) -> float:
        return LLD_RATE

    def setup(self) -> None:
        import opensmile

        fs = self._feature_set_arg()
        self._func = opensmile.Smile(feature_set=fs, feature_level=self.func_level)
        nf = len(self._func.feature_names)
        nl = len(opensmile.Smile(feature_set=fs, feature_level=self.lld_level).feature_names) if self.wants_lld() else self.dims()[1]
        if (nf, nl) != self.dims():
            raise MerError(f"{self.name}: openSMILE {opensmile.__version__} gives {nf} functionals / {nl} LLDs, expected {self.dims()}")

    @classmethod
    def missing(cls, config=None) -> str | None:
        import importlib.util

        if importlib.util.find_spec("opensmile") is None:
            return "the opensmile package is not installed: pip install 'mer[opensmile]'"
        return None

    def wants_lld(self) -> bool:
        return bool(self.config.lld)

    def versions(self) -> dict[str, str]:
        import opensmile

        return {"opensmile": opensmile.__version__, "numpy": np.__version__}

    def identity(self) -> dict:
        return {"feature_set": self.feature_set}

    def outputs(self):
        nf, nl = self.dims()
        what = self.feature_set or "config"
        out = {"functionals": OutputSpec("fixed", nf, None, "float32", f"openSMILE {what} functionals")}
        if self.wants_lld():
            out["lld"] = OutputSpec("ragged", nl, self.lld_rate(), "float32", f"openSMILE {what} low-level descriptors per frame")
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


def _register_builtin(name: str, feature_set: str, nf: int, nl: int, lld_default: bool) -> None:
    """One class per shipped set, made from the SETS row (the name is written once)."""
    cls = type(f"Smile_{name}", (_Smile,), {
        "__doc__": f"openSMILE {feature_set}: {nf} functionals, {nl} LLDs per frame.",
        "__module__": __name__,
        "feature_set": feature_set,
        "Config": SmileConfig if lld_default else LargeSmileConfig,
    })
    globals()[cls.__name__] = cls  # a module attribute, so instances pickle to Dask workers
    EXTRACTORS.register(name)(cls)


for _name, _row in SETS.items():
    _register_builtin(_name, *_row)
EGeMAPS, GeMAPS, ComParE = Smile_egemaps, Smile_gemaps, Smile_compare  # noqa: F821 (made above)


# ----------------------------------------------------------------------- any .conf file
_INCLUDE = re.compile(r"^\s*\\\{(?!\\cm\[)(.+)\}\s*$")


def _active_lines(p: Path) -> list[str]:
    """The lines of a config that openSMILE reads: comments (``//``, ``;``, ``%``) left out."""
    return [ln for ln in p.read_text(errors="replace").splitlines() if not ln.lstrip().startswith(("//", ";", "%"))]


def config_files(path: str | Path) -> list[Path]:
    """``path`` and every file it includes (``\\{file}`` lines, resolved against the
    including file's folder, recursively), in reading order. The package's own
    placeholders (``\\{\\cm[source{?}...]}``) are filled by opensmile-python and belong to
    its version, not to the user's file."""
    seen: list[Path] = []

    def visit(p: Path, chain: tuple[str, ...]):
        p = p.resolve()
        if p in seen:
            return
        if not p.is_file():
            where = f" (included from {chain[-1]})" if chain else ""
            raise UsageError(f"--smile.config: {p}: no such file{where}")
        seen.append(p)
        for line in _active_lines(p):
            m = _INCLUDE.match(line)
            if m:
                visit(p.parent / m.group(1).strip(), chain + (str(p),))

    visit(Path(path).expanduser(), ())
    return seen


def config_hash(path: str | Path) -> str:
    """sha256 over the config file and every file it includes (names relative to the first)."""
    files = config_files(path)
    base = files[0].parent
    h = hashlib.sha256()
    for f in files:
        h.update(os.path.relpath(f, base).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass
class CustomSmileConfig(ExtractorConfig):
    config: str = ""          # path to an openSMILE .conf (with opensmile-python's source/sink placeholders)
    func_level: str = "func"  # data-memory level the functionals are read from
    lld_level: str = ""       # level of the frame-level LLDs to store as well ("" = none)
    lld_rate: float = 100.0   # frames per second of that level (the conf's frameStep: 0.01 s -> 100)
    sample_rate: int = 16000


@EXTRACTORS.register("smile")
class CustomSmile(_Smile):
    """Any openSMILE config file (``--smile.config PATH``); sizes read from the config."""

    feature_set = ""
    Config = CustomSmileConfig

    @classmethod
    def missing(cls, config=None) -> str | None:
        conf = cls.as_config(config).config
        if not conf or not Path(str(conf)).expanduser().is_file():
            return (f"needs the openSMILE config {conf or '(none given)'}, which the opensmile wheel does not ship: "
                    f"take it from an openSMILE release (config/misc/emo_large.conf, with opensmile-python's source "
                    f"and sink includes) and pass `--smile.config /path/to/{Path(str(conf or 'emo_large.conf')).name}`")
        return super().missing(config)

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        c = self.config
        if not c.config:
            raise UsageError("smile: name an openSMILE config file with --smile.config PATH")
        self.path = Path(c.config).expanduser().resolve()
        self.func_level = c.func_level
        self.lld_level = c.lld_level or c.func_level  # read (and ignored) when no LLDs are wanted
        text = "\n".join(_active_lines(config_files(self.path)[0]))
        missing = [p for p in (SOURCE_PLACEHOLDER, SINK_PLACEHOLDER) if p not in text]
        if missing:
            raise UsageError(
                f"--smile.config {self.path}: lacks {' and '.join(m + ']' for m in missing)}; opensmile-python feeds audio "
                "and reads features through these includes (replace the file's wave source section with "
                "\\{\\cm[source{?}:include external source]} and its output include with \\{\\cm[sink{?}:include external sink]})"
            )
        self._hash = config_hash(self.path)
        self._dims: tuple[int, int] | None = None

    def _feature_set_arg(self):
        return str(self.path)

    def wants_lld(self) -> bool:
        return bool(self.config.lld_level)

    def lld_rate(self) -> float:
        return float(self.config.lld_rate)

    def dims(self) -> tuple[int, int]:
        if self._dims is None:
            import opensmile

            def size(level):
                try:
                    return len(opensmile.Smile(feature_set=str(self.path), feature_level=level).feature_names)
                except Exception as e:  # openSMILE's own message says what is wrong in the file
                    raise MerError(f"--smile.config {self.path}: openSMILE cannot read level {level!r}: {e}") from None

            self._dims = (size(self.func_level), size(self.lld_level) if self.wants_lld() else 0)
        return self._dims

    def identity(self) -> dict:
        return {"config_sha256": self._hash}


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
        opts["source"] = os.path.join(root, oscfg.EXTERNAL_INPUT_CONFIG)
        opts["sampleRate"] = ext.sample_rate
        opts["nBits"] = 16
        opts["sinkLevelLLD"] = ext.lld_level
        opts["sinkLevelFunc"] = ext.func_level
        self.nf, self.nl = ext.dims()
        self.want_lld = ext.wants_lld()
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
            # Needed for correctness, not a habit: once an input has ended (EOI) the instance
            # refuses to run again ("openSMILE must be initialized first", checked with
            # opensmile 2.6), and reset (3.4 ms) is the cheap way back against a new instance
            # (8.5 ms). A fresh instance's first utterance skips it. After reset, callbacks
            # must be registered again (SMILEapi contract).
            s.reset()
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
            raise InputError("too short for openSMILE: no functionals produced")
        f = self.func.copy()
        l = self.lld[: self.n_lld].copy() if self.want_lld else None
        return f, l

    def close(self) -> None:
        try:
            self.smile.free()
        except Exception:
            pass
