"""Tests of ``model.pretraining``."""
