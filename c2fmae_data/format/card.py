"""The dataset card ``ROOT/README.md``: a Hugging Face dataset card whose YAML ``configs`` name each
split's shards (``shards/<split>-*.parquet``), so ``datasets.load_dataset(ROOT)`` loads the splits
and the folder can be pushed to the Hub as it is. Written beside ``manifest.json`` every time the
manifest is (re)built or downloaded; a README.md without this module's mark line is the user's own
card and is never overwritten. See docs/FORMAT.md, "Plain tools".
"""
from __future__ import annotations

import uuid
from typing import Any

from c2fmae_data.format.bounds import MAX_CARD_BYTES
from c2fmae_data.format.categories import NUM_SEMANTIC_CLASSES

CARD = "README.md"
MARK = ("<!-- written by c2fmae-data with manifest.json and rewritten with it; delete this line "
        "to keep your own edits -->")


def card_yaml(splits: "list[str]") -> str:
    """The YAML front matter: one ``default`` config whose data files are the split globs."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for sp in splits:
        lines += [f"  - split: {sp}", f"    path: shards/{sp}-*.parquet"]
    return "\n".join(lines + ["---", ""])


def card_text(manifest: "dict[str, Any]") -> str:
    """The whole card for a manifest: YAML, then what the columns mean and how to read them."""
    splits = manifest["splits"]
    prov = manifest.get("provenance") or {}
    rows = "\n".join(f"| {sp} | {s.get('rows', 0)} | {s.get('ok', 0)} | {s.get('failed', 0)} | "
                     f"{len(s.get('shards', []))} |" for sp, s in splits.items())
    source = prov.get("source") or prov.get("models") or "see manifest.json provenance"
    kind = ("images included (`image_bytes`)" if manifest.get("self_contained") else
            "labels only: join `<image root>/<key>` with your own copy of the images")
    return f"""{card_yaml(list(splits))}{MARK}

# C2FMAE multi-granular dataset

Format `{manifest.get("format")}` {manifest.get("format_version")} (specified in
`docs/FORMAT.md` of the C2FMAE toolkit): one Parquet row
per image with an instance mask (`instance_png`, 16-bit PNG, 0 = background, ids by decreasing
area) and a {NUM_SEMANTIC_CLASSES}-class COCO-panoptic semantic mask (`semantic_png`, 8-bit PNG,
255 = unlabeled). {kind}. Source: `{source}`.

| split | rows | ok | failed | shards |
| --- | --- | --- | --- | --- |
{rows}

```python
from datasets import load_dataset;  ds = load_dataset("ROOT")        # splits from this card
import pandas as pd;                df = pd.read_parquet("ROOT/shards")  # all splits
import duckdb;  duckdb.sql("SELECT key, num_instances FROM 'ROOT/shards/{next(iter(splits), "train")}-*.parquet'")
from c2fmae_data import ImageNetMultiGranular  # RGB + masks for PyTorch, checked by sha256
```

`manifest.json` lists every shard with its sha256; `c2fmae-data verify ROOT` checks them.
"""


def write_card(fs, base: str, manifest: "dict[str, Any]") -> bool:
    """Write ``base/README.md`` for ``manifest`` unless a card without the mark is there (the
    user's own); returns whether it was written. Atomic like the manifest."""
    from c2fmae_data.format.fs import join
    from c2fmae_data.format.shards import TMP_MARK

    path = join(base, CARD)
    if fs.exists(path):
        with fs.open(path, "rb") as f:   # the mark is near the top; a huge file is not read
            if MARK.encode() not in f.read(MAX_CARD_BYTES):
                return False
    tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    with fs.open(tmp, "w") as f:
        f.write(card_text(manifest))
    fs.mv(tmp, path)
    return True
