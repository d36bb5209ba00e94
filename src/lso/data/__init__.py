"""Data: readers (community HDF5, raw CAVE, Harvard .mat), the paper's degradation, SRF, synthetic scenes."""
