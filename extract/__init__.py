"""Feature extraction: extractors, content-keyed stores, the Dask engine."""
