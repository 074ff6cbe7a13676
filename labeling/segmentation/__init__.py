"""Masks from boxes: HQ-SAM (``SamHQModel``) behind one interface, and SAM 3, which detects and
segments from the class prompt in one model.

May import: ``labeling.detection`` (prompts and the detector's post-processing); transformers
lazily.
"""
