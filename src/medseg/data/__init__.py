"""Data: samples, published-layout sources, the phantom, transforms and splits."""

from medseg.data import sources
from medseg.data.sample import Sample, binarize, stack_slices

__all__ = ["Sample", "binarize", "sources", "stack_slices"]
