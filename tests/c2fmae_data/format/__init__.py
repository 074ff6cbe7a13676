"""Tests of ``c2fmae_data.format``."""
