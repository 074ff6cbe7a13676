"""include_failed=True: failed rows come with their RGB and all-255 masks; a failed row whose image
cannot be decoded raises SampleError naming the key and the failure reason, or is skipped."""
from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from c2fmae_data import ImageNetMultiGranular
from c2fmae_data.loading.source import SampleError
from tests._datasets import SMALL, failed_rows_dataset

def test_failed_row_with_pixels_is_kept_with_ignore_masks(tmp_path):
    keys = failed_rows_dataset(tmp_path)
    assert len(ImageNetMultiGranular(tmp_path, **SMALL)) == 1
    ds = ImageNetMultiGranular(tmp_path, include_failed=True, **SMALL)
    assert ds.keys() == keys and ds.num_failed == 2
    s = ds[1]
    assert s["key"] == keys[1] and s["rgb"].shape == (3, 32, 32) and s["label"] == 0
    assert (s["instance"] == 255).all() and (s["semantic"] == 255).all()
    assert (ds[0]["semantic"] != 255).any()


def test_undecodable_failed_row_names_key_and_reason(tmp_path):
    keys = failed_rows_dataset(tmp_path)
    ds = ImageNetMultiGranular(tmp_path, include_failed=True, **SMALL)
    with pytest.raises(SampleError, match=r"c_broken.png: labeling failed \(image unreadable\) "
                                          r"and image is not decodable"):
        ds[2]
    skip = ImageNetMultiGranular(tmp_path, include_failed=True, on_error="skip", **SMALL)
    got = [k for b in DataLoader(skip, batch_size=3) for k in b["key"]]
    assert keys[2] not in got and skip.errors == 1
