"""lso.calibration (see ARCHITECTURE.md)."""
