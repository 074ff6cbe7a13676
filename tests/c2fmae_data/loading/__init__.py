"""Tests of ``c2fmae_data.loading``."""
