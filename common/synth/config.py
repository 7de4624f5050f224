"""``SynthConfig``: every parameter of a synthetic corpus, validated once."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from mer.common.errors import UsageError


GENERATOR_VERSION = 1
INFO_FILE = "synth_info.json"
LAYOUTS = ("iemocap", "meld", "csv")


@dataclass
class SynthConfig:
    layout: str = "iemocap"
    per_class: int = 20  # iemocap: per 4-class emotion per session; meld: per emotion; csv: per label per session
    sessions: int = 5  # iemocap sessions (2 speakers each); csv: 2 * sessions speakers
    seed: int = 0
    one_modality: float = 0.3  # fraction of non-neutral utterances with emotion in one modality only
    label_noise: float = 0.02
    defects: bool = False  # add a few broken items the adapters must drop (listed in synth_info.json)
    dialog_wavs: bool = False  # iemocap: also write dialog/wav/<dialog>.wav (stereo; no adapter reads it)
    alignments: bool = True  # iemocap: also write sentences/ForcedAlignment/*.wdseg
    video: bool = True  # meld: tiny H.264 stream beside the AAC audio, as in the release
    # iemocap/meld: emotion persists over stretches of a dialogue, and this share of the
    # emotional turns that follow a turn of the same emotion is neutral in voice and words
    # but keeps its label (only the context tells it); 0 = utterances independent
    context: float = 0.0
    # iemocap: "espeak" (utterances as long as their speech, 1-8.5 s, mean ~3 s) or "iemocap"
    # (trailing silence extends each to a duration drawn like IEMOCAP's: 1-15 s, mean ~4.5 s)
    lengths: str = "espeak"

    def __post_init__(self):
        # Checked here, once, so that every way of making a config (generate's keywords, a
        # config passed in, the demo) fails the same way before anything is written.
        if self.layout not in LAYOUTS:
            raise UsageError(f"unknown synthetic layout {self.layout!r}; choose one of: {', '.join(LAYOUTS)}")
        if self.per_class < 1 or self.sessions < 1:
            raise UsageError(f"per_class ({self.per_class}) and sessions ({self.sessions}) must be at least 1")
        if self.layout == "iemocap" and self.sessions > 99:
            raise UsageError("IEMOCAP ids hold two session digits: at most 99 sessions")
        if not 0 <= self.one_modality <= 1 or not 0 <= self.label_noise < 1:
            raise UsageError("one_modality must be in [0, 1] and label_noise in [0, 1)")
        if not 0 <= self.context <= 1 or (self.context and self.layout == "csv"):
            raise UsageError("context must be in [0, 1], and is for the iemocap and meld layouts (they have dialogues)")
        if self.lengths not in ("espeak", "iemocap") or (self.lengths == "iemocap" and self.layout != "iemocap"):
            raise UsageError(f"lengths {self.lengths!r}: espeak, or iemocap (for the iemocap layout)")

    def params(self) -> dict:
        return {"generator_version": GENERATOR_VERSION, **asdict(self)}
