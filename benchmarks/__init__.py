"""lso.benchmarks (see ARCHITECTURE.md)."""
