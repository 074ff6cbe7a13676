"""Tests of ``c2fmae_data.label_eval``."""
