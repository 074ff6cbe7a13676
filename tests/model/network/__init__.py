"""Tests of ``model.network``."""
