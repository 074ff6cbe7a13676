"""The C2FMAE network (paper section III): input adapters (eq. 1), the shared timm ViT encoder,
progressive masking (eq. 5-11), the cascaded decoder (eq. 2-4), the losses (eq. 12), the MAE
baseline's decoder, and ``C2FMAEConfig`` with the named sizes of ``build_model``.

May import: torch and timm only; nothing else of model/ and nothing of c2fmae_data. Inside:
``adapters`` and ``masking`` are leaves; ``c2fmae`` assembles the rest.
"""
