"""Trained weights shipped as package data (the demo checkpoint)."""
