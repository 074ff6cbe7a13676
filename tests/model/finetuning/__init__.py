"""Tests of ``model.finetuning``."""
