"""The training data layer: feature stores -> aligned in-memory arrays -> padded batches.

One module a job, in the order data flows:
1. ``requests``: ``parse_features("bert,mfcc.frames")`` -> ``FeatureRequest``s (feature,
   output or None, joined parts).
2. ``stores``: each named store is read once into a ``FeatureSet`` (ids, validity, fixed
   arrays, ragged values + offsets); a ``FeatureCache`` keeps them so training several
   fusions or feature sets in one ``mer train`` never reads a store twice.
3. ``joins``: ``mfcc+egemaps`` joins stores into one in-memory input.
4. ``inputs``: ``resolve_inputs`` picks the outputs a fusion wants (pooled vectors or
   sequences) from what each store declares in its metadata: dimensions are never
   hard-coded. The result is ``InputSpec``s, the one input vocabulary of models and data.
5. ``alignment``: ``build_data`` aligns every input to the labelled utterances of the
   manifest by id; utterances missing from a store (or marked invalid by the extractor)
   are dropped and counted in a ``Report``.
6. ``normalize``: per fold, ``Normalizer.fit`` sees training rows only.
7. ``batching``: ``Batcher`` pads ragged inputs per batch and builds their masks (True on
   real frames), prefetching in a thread; ``outputs_batch`` builds the same batches from
   freshly extracted outputs for ``mer predict``.

This package re-exports the names callers import from ``mer.train.data``.
"""
from mer.train.data.alignment import DROP_WARN_SHARE, Arrays, TrainData, build_data, usage_line
from mer.train.data.batching import (
    BATCH_FRAMES,
    BUCKET_POOL,
    PREFETCH,
    STORE_RUN,
    Batcher,
    Prefetcher,
    outputs_batch,
    pad_ragged,
    single_batch,
)
from mer.train.data.inputs import InputSource, input_specs, resolve_inputs
from mer.train.data.joins import MAX_SKEW_SECONDS, combined_set, frame_repeats, join_frames, join_vectors
from mer.train.data.normalize import Normalizer
from mer.train.data.requests import JOIN, MEAN_SUFFIX, FeatureRequest, parse_features
from mer.train.data.stores import (
    MMAP_BYTES,
    PREFERRED_POOLED,
    PREFERRED_SEQUENCE,
    FeatureCache,
    FeatureSet,
    default_outputs,
    gather_ragged,
    row_means,
)
from mer.train.fusion import InputSpec

__all__ = [
    "DROP_WARN_SHARE", "usage_line",
    "Arrays", "TrainData", "build_data", "BATCH_FRAMES", "BUCKET_POOL", "PREFETCH", "STORE_RUN", "Batcher",
    "Prefetcher", "outputs_batch", "pad_ragged", "single_batch", "InputSource", "InputSpec", "input_specs",
    "resolve_inputs", "MAX_SKEW_SECONDS", "combined_set", "frame_repeats", "join_frames", "join_vectors",
    "Normalizer", "JOIN", "MEAN_SUFFIX", "FeatureRequest", "parse_features", "MMAP_BYTES", "PREFERRED_POOLED",
    "PREFERRED_SEQUENCE", "FeatureCache", "FeatureSet", "default_outputs", "gather_ragged", "row_means",
]
