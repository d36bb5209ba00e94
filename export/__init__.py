"""lso.export (see ARCHITECTURE.md)."""
