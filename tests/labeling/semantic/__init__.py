"""Tests of ``labeling.semantic``."""
