"""Wrappers of the other networks the pack loads (CLIP; later face parsers and encoders)."""
