"""Emotion tables: prosody per emotion, phrase lists, label names and voices of each layout."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prosody:
    """espeak-ng parameters for one emotion (pitch is added to the speaker's base pitch)."""

    rate: int  # words per minute (espeak default 175)
    pitch: int  # offset on espeak's 0..100 pitch scale
    range: int  # 0..100 (0 = monotone)
    volume: int  # 0..200 (100 = normal)
    wordgap: int = 0  # extra pause between words, units of 10 ms


PROSODY: dict[str, Prosody] = {
    "neu": Prosody(rate=160, pitch=0, range=15, volume=85, wordgap=0),
    # angry: loudest (espeak clips near 200: a harsh, pressed sound), fastest, wide range
    "ang": Prosody(rate=230, pitch=6, range=75, volume=190, wordgap=0),
    "hap": Prosody(rate=170, pitch=18, range=85, volume=110, wordgap=0),
    "exc": Prosody(rate=195, pitch=26, range=95, volume=130, wordgap=0),
    "sad": Prosody(rate=110, pitch=-12, range=8, volume=45, wordgap=5),
    "fru": Prosody(rate=190, pitch=4, range=55, volume=140, wordgap=0),
    "sur": Prosody(rate=170, pitch=28, range=95, volume=120, wordgap=1),
    "fea": Prosody(rate=220, pitch=22, range=60, volume=95, wordgap=0),
    "dis": Prosody(rate=140, pitch=-6, range=40, volume=95, wordgap=2),
}

PHRASES: dict[str, list[str]] = {
    "neu": [
        "the meeting is on tuesday", "I need to fill out these forms", "where is the office",
        "it is on the table", "I will call you later", "the train leaves at nine",
        "can you pass me the paper", "I have an appointment at three", "the line is over there",
        "we need a new license", "it takes about an hour", "what time is it",
        "I parked the car outside", "the report is due on friday", "my number is on the card",
        "the store closes at six", "we moved here last year", "you have to sign here",
    ],
    "ang": [
        "this is ridiculous", "I am sick of this", "how dare you", "get out of my face",
        "you never listen to me", "I hate this place", "that is completely unacceptable",
        "stop lying to me", "what the hell is wrong with you", "I told you a hundred times",
        "this is outrageous", "don't you dare", "I am furious", "shut up",
        "you ruined everything", "leave me alone",
    ],
    "hap": [
        "that is wonderful", "I love it", "this is so nice", "I am so happy for you",
        "what a lovely day", "that sounds great", "I am really glad", "you look beautiful",
        "thank you so much", "this is the best", "I can't stop smiling", "we had so much fun",
        "that is fantastic news", "I feel great",
    ],
    "exc": [
        "oh my god we did it", "this is amazing", "I can't believe it", "we are going to vegas",
        "yes yes yes", "that is incredible", "I got the job", "let's celebrate",
        "this is awesome", "wow look at this", "we won", "best day ever",
    ],
    "sad": [
        "I miss her so much", "I feel so alone", "nothing matters anymore", "he is gone",
        "I am so sorry", "it hurts", "I lost everything", "I can't do this anymore",
        "I just want to cry", "nobody cares", "it's all my fault", "I am so tired",
        "we will never see him again", "everything is falling apart",
    ],
    "fru": [
        "why does this always happen", "I have been waiting for hours", "this line never moves",
        "nobody here can help me", "I already filled that out", "this is a waste of time",
        "you keep saying that", "I don't understand why",
    ],
    "sur": [
        "wait what", "really", "no way", "are you serious", "I didn't expect that",
        "you're kidding", "since when", "how did that happen",
    ],
    "fea": [
        "I am scared", "what was that noise", "please don't hurt me", "I think someone is here",
        "we have to get out", "I am afraid", "something is wrong",
    ],
    "dis": [
        "that is disgusting", "gross", "I can't even look at it", "that smells awful",
        "how could you eat that", "ew", "that is revolting",
    ],
}

# Shared by every emotion: they carry no label information.
FILLERS = ["well", "you know", "I mean", "I think", "so", "okay", "actually", "listen", "look", "um", "right"]

PUNCT = {"neu": ".", "ang": "!", "hap": "!", "exc": "!", "sad": ".", "fru": ".", "sur": "?", "fea": "!", "dis": "."}
QUESTION_STARTS = ("where", "what", "can", "how", "why", "are", "since")

# Dimensional labels (valence, activation, dominance) on IEMOCAP's 1..5 scale: the centre
# each annotator's integer rating is drawn around.
VAD_CENTRE = {
    "neu": (3.0, 2.2, 2.6), "ang": (1.7, 3.9, 3.9), "hap": (4.0, 3.1, 3.1), "exc": (4.1, 3.9, 3.4),
    "sad": (1.9, 2.0, 2.0), "fru": (2.0, 3.2, 3.4), "sur": (3.4, 3.8, 2.9), "fea": (1.9, 3.6, 1.9),
    "dis": (1.8, 3.0, 3.3), "xxx": (2.6, 2.9, 2.9),
}

IEMOCAP_NAMES = {
    "neu": "Neutral", "fru": "Frustration", "ang": "Anger", "sad": "Sadness", "hap": "Happiness",
    "exc": "Excited", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other",
}

# MELD's seven emotions -> the prosody/wording profile that renders them.
MELD_PROFILE = {
    "neutral": "neu", "joy": "hap", "surprise": "sur", "anger": "ang",
    "sadness": "sad", "disgust": "dis", "fear": "fea",
}
MELD_SENTIMENT = {"neutral": "neutral", "joy": "positive", "anger": "negative", "sadness": "negative",
                  "disgust": "negative", "fear": "negative"}  # surprise: either, drawn per utterance
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]
MELD_FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
MELD_SPEAKERS = [("Chandler", "M"), ("Monica", "F"), ("Ross", "M"), ("Rachel", "F"), ("Joey", "M"), ("Phoebe", "F")]

CSV_LABELS = {"ang": "angry", "hap": "happy", "sad": "sad", "neu": "neutral"}

# espeak voices (accent + variant), one per speaker, plus a base pitch drawn per speaker.
# Variants with a "breath" setting (f2, f3, f5) are left out: their breath noise differs
# from one process to the next (seen here with espeak-ng 1.52), which breaks determinism.
F_VOICES = ["en-us+f1", "en+f4", "en-029+f1", "en-gb-x-rp+f4", "en-us-nyc+f1", "en-gb-scotland+f4"]
M_VOICES = ["en-us+m1", "en+m2", "en-029+m3", "en-gb-x-rp+m4", "en-us-nyc+m5", "en-gb-scotland+m6", "en-us+m7"]
