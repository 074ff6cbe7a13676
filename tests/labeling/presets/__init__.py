"""Tests of ``labeling.presets``."""
