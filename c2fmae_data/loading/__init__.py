"""Reading a dataset for training: ``ImageNetMultiGranular`` (map-style), the stream variant,
what both share (``base``: checked shard access and the per-row index; ``sample``: one row to
one sample, masks checked as untrusted PNGs), the shard-window sampler, joint transforms, the
per-row index arrays and the pixel source (the user's ImageNet copy joined by key, or embedded
bytes).

May import: ``c2fmae_data.format``, torch (lazily where the CLI must stay light), PIL, OpenCV.
"""
