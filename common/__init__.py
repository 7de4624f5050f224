"""Shared pieces of `mer`: registries, paths, manifests, corpus adapters, audio I/O."""

__version__ = "0.1.0"
