"""Grounding DINO phrase scoring on hand-built token probabilities and a scripted model."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from labeling.detection.grounding_dino import GroundingDinoDetector, phrase_spans, score_queries
from labeling.detection.prompts import Prompt


def test_mean_rule_keeps_a_modifier_word_from_carrying_the_phrase():
    # tokens: [CLS] dog sled . [SEP]; query 0 sits on a dog, query 1 on a sled with dogs
    probs = np.array([[0.0, 0.6, 0.02, 0.0, 0.0],
                      [0.0, 0.6, 0.8, 0.0, 0.0]], np.float32)
    spans = phrase_spans([101, 3899, 22435, 1012, 102], {101, 102, 1012})
    assert spans == [[1, 2]]
    scores, ids = score_queries(probs, spans)
    np.testing.assert_allclose(scores, [0.31, 0.7], rtol=1e-6)
    assert scores[0] < 0.35 <= scores[1]          # the dog alone no longer clears the start threshold
    assert ids.tolist() == [0, 0]


def test_best_phrase_by_mean_not_by_single_token():
    # phrases: "horse cart" (tokens 1,2) and "cart" (token 4)
    probs = np.array([[0.0, 0.95, 0.05, 0.0, 0.6, 0.0]], np.float32)
    scores, ids = score_queries(probs, [[1, 2], [4]])
    assert ids.tolist() == [1] and scores[0] == pytest.approx(0.6)


class _Tok:
    cls_token_id, sep_token_id, pad_token_id = 101, 102, 0

    def convert_tokens_to_ids(self, toks):
        return [{".": 1012, "?": 1029}[t] for t in toks]

    def __call__(self, texts, **kw):
        ids = torch.tensor([[101, 3899, 22435, 1012, 102]] * len(texts))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.zeros_like(ids)}


class _Model(torch.nn.Module):
    config = SimpleNamespace(max_text_len=32)

    def forward(self, pixel_values, **kw):
        logit = lambda p: float(np.log(p / (1 - p)))          # noqa: E731
        lg = torch.full((1, 2, 5), -20.0)
        lg[0, 0, 1], lg[0, 0, 2] = logit(0.6), logit(0.02)    # dog only
        lg[0, 1, 1], lg[0, 1, 2] = logit(0.6), logit(0.8)     # dog sled
        boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
        return SimpleNamespace(logits=lg, pred_boxes=boxes)


def test_detector_scores_phrases_by_token_mean():
    proc = lambda images, return_tensors: {"pixel_values": torch.zeros(1, 3, 8, 8),  # noqa: E731
                                           "pixel_mask": torch.ones(1, 8, 8, dtype=torch.long)}
    det = GroundingDinoDetector(_Model(), proc, _Tok())
    out = det.detect([np.zeros((10, 20, 3), np.uint8)], [Prompt(("dog sled",))], floor=0.35)[0]
    np.testing.assert_allclose(out.scores, [0.7], rtol=1e-4)
    np.testing.assert_allclose(out.boxes, [[0, 0, 20, 10]], atol=1e-4)
    assert out.phrase(0) == "dog sled"
