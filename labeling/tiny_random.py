"""The ``tiny-random`` preset: the real transformers classes built from tiny configs with
fixed-seed random weights and a locally built tokenizer/processors. No network, no files.

Their labels are PLACEHOLDERS (random weights): they exercise the whole code path, shapes and
formats, nothing more. Random weights score around 0.5 at best, so the preset's thresholds are 0.
"""
from __future__ import annotations

import string

import torch

from c2fmae_data.categories import COCO_PANOPTIC_NAMES

SEED = 0
VOCAB_SIZE = 1036
# Grounding DINO hard-codes these BERT ids in its text masks ([CLS], [SEP], '.', '?')
_FIXED = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".",
          1029: "?"}


def tiny_vocab() -> "list[str]":
    """A character-level WordPiece vocab with the special ids where Grounding DINO expects them."""
    filler = [c for c in string.ascii_lowercase + string.digits + "-'"]
    filler += ["##" + c for c in string.ascii_lowercase + string.digits + "-'"]
    vocab, it = [], iter(filler)
    for i in range(VOCAB_SIZE):
        vocab.append(_FIXED.get(i) or next(it, f"[unused{i}]"))
    return vocab


def _swin(out_features):
    from transformers import SwinConfig

    return SwinConfig(image_size=224, patch_size=4, embed_dim=24, depths=[1, 1, 1, 1],
                      num_heads=[1, 1, 2, 2], window_size=7, out_features=out_features)


def grounding_dino():
    """(model, image_processor, tokenizer)"""
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig,
                              GroundingDinoForObjectDetection, GroundingDinoImageProcessor)

    text = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    cfg = GroundingDinoConfig(backbone_config=_swin(["stage2", "stage3", "stage4"]),
                              text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
                              encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                              decoder_attention_heads=2, num_queries=20, num_feature_levels=4,
                              encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    torch.manual_seed(SEED)
    model = GroundingDinoForObjectDetection(cfg).eval()
    vocab = {tok: i for i, tok in enumerate(tiny_vocab())}
    tok = BertTokenizer(vocab=vocab, do_lower_case=True)
    proc = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 224})
    return model, proc, tok


def sam_hq():
    """(model, image_processor)"""
    from transformers import (SamHQConfig, SamHQMaskDecoderConfig, SamHQModel,
                              SamHQPromptEncoderConfig, SamHQVisionConfig, SamImageProcessor)

    vis = SamHQVisionConfig(hidden_size=48, output_channels=32, num_hidden_layers=2,
                            num_attention_heads=2, patch_size=16, window_size=4,
                            global_attn_indexes=[1], num_pos_feats=16, mlp_dim=96, image_size=256)
    pe = SamHQPromptEncoderConfig(hidden_size=32, image_size=256, patch_size=16,
                                  mask_input_channels=4)
    md = SamHQMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2,
                                num_attention_heads=2, iou_head_hidden_dim=32, vit_dim=48)
    torch.manual_seed(SEED)
    model = SamHQModel(SamHQConfig(vision_config=vis, prompt_encoder_config=pe,
                                   mask_decoder_config=md)).eval()
    proc = SamImageProcessor(size={"longest_edge": 256}, pad_size={"height": 256, "width": 256})
    return model, proc


def mask2former():
    """(model, image_processor) with the 133 official COCO-panoptic names as id2label."""
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation,
                              Mask2FormerImageProcessor)

    id2label = {i: n for i, n in enumerate(COCO_PANOPTIC_NAMES)}
    cfg = Mask2FormerConfig(backbone_config=_swin(["stage1", "stage2", "stage3", "stage4"]),
                            feature_size=32, mask_feature_size=32, hidden_dim=32,
                            encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1,
                            decoder_layers=2, num_attention_heads=2, num_queries=20,
                            id2label=id2label, label2id={n: i for i, n in id2label.items()})
    torch.manual_seed(SEED)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    proc = Mask2FormerImageProcessor(size={"shortest_edge": 128, "longest_edge": 224},
                                     size_divisor=32)
    return model, proc
