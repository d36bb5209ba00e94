"""lso.runtime (see ARCHITECTURE.md)."""
