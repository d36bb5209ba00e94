"""lso.benchmarks (see docs/architecture.md, "Layout")."""
