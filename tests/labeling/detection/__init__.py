"""Tests of ``labeling.detection``."""
