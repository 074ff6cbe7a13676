"""Tests of ``labeling``."""
