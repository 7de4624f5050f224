"""Training: data layer over feature stores, fusion models, protocols, metrics, run dirs."""
import os

# torch's CPU convolutions (oneDNN, through ideep) keep one compiled kernel per input shape,
# up to 1,024 of each kind; length-bucketed batches give almost every batch a new shape, so
# these caches grew a training process by ~0.5 GB over 5 folds (mel CNN, 1.07 -> 1.56 GB
# peak; with 8 entries it stays at 1.07 GB, no slower: bench/RESULTS.md). Both are read when
# torch first builds such a kernel, so they are set here, before any model runs; a value the
# user set wins.
os.environ.setdefault("LRU_CACHE_CAPACITY", "8")
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
