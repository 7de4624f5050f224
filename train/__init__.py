"""Training: data layer over feature stores, fusion models, protocols, metrics, run dirs."""
