"""The ``tiny-random`` presets (``tiny-random``, ``sam3-tiny-random``, ``mm-gdino-tiny-random``;
``semantic="eomt"`` picks the tiny EoMT): the real transformers classes built from tiny configs
with fixed-seed random weights and locally built tokenizers/processors. No network, no files.

Their labels are PLACEHOLDERS (random weights): they exercise the whole code path, shapes and
formats, nothing more. Random weights score around 0.5 at best, so the preset's thresholds are 0.
"""
from __future__ import annotations

import string

import torch

from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES

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


def mm_grounding_dino():
    """(model, image_processor, tokenizer): MM-Grounding-DINO with the Grounding DINO sizes above
    (same BERT ids hard-coded in its text masks, same processor and tokenizer classes)."""
    from transformers import (BertConfig, BertTokenizer, GroundingDinoImageProcessor,
                              MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)

    text = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    cfg = MMGroundingDinoConfig(backbone_config=_swin(["stage2", "stage3", "stage4"]),
                                text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
                                encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                                decoder_attention_heads=2, num_queries=20, num_feature_levels=4,
                                encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    torch.manual_seed(SEED)
    model = MMGroundingDinoForObjectDetection(cfg).eval()
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(tiny_vocab())}, do_lower_case=True)
    proc = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 224})
    return model, proc, tok


def clip_tokenizer():
    """A character-level CLIP BPE tokenizer (no merges): every word is its letters, the last one
    carrying '</w>'; <|startoftext|> / <|endoftext|> (also padding) at the end of the vocab."""
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + "-'")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for t in ("<|startoftext|>", "<|endoftext|>"):
        vocab[t] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def sam3():
    """(model, image_processor, tokenizer): SAM 3 at 112 px (patch 14 -> an 8x8 grid, FPN
    32/16/8, masks 32x32), 10 queries, one layer per DETR/geometry stage."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3ViTConfig

    tok = clip_tokenizer()
    vit = Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, image_size=112, patch_size=14, window_size=4,
                        global_attn_indexes=[1], pretrain_image_size=56)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, projection_dim=32,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    small = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    cfg = Sam3Config(vision_config=dict(backbone_config=vit, fpn_hidden_size=32,
                                        backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]]),
                     text_config=text, geometry_encoder_config=dict(num_layers=1, **small),
                     detr_encoder_config=dict(num_layers=1, **small),
                     detr_decoder_config=dict(num_layers=1, num_queries=10, **small),
                     mask_decoder_config=dict(hidden_size=32, num_attention_heads=2))
    torch.manual_seed(SEED)
    model = Sam3Model(cfg).eval()
    proc = Sam3ImageProcessor(size={"height": 112, "width": 112},
                              mask_size={"height": 32, "width": 32})
    return model, proc, tok


def eomt():
    """(model, image_processor): EoMT at 64 px (patch 16), 3 ViT layers, queries in the last one,
    the 133 COCO-panoptic names as id2label; padded to a square like the hub's COCO models."""
    from transformers import EomtConfig, EomtForUniversalSegmentation, EomtImageProcessor

    id2label = {i: n for i, n in enumerate(COCO_PANOPTIC_NAMES)}
    cfg = EomtConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=64,
                     patch_size=16, num_blocks=1, num_queries=10, num_register_tokens=1,
                     id2label=id2label, label2id={n: i for i, n in id2label.items()})
    torch.manual_seed(SEED)
    model = EomtForUniversalSegmentation(cfg).eval()
    proc = EomtImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    return model, proc
