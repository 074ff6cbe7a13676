"""Weights dir lock: verify catches missing and altered files; presets resolve."""
import pytest

from labeling.presets import PRESETS, parse_preset, resolve_specs
from labeling.weights import record, verify, write_lock


def test_verify_detects_missing_and_changed_files(tmp_path):
    d = tmp_path / "w" / "org__model"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\0" * 100)
    wdir = str(tmp_path / "w")
    assert verify(wdir) and "no weights.lock.json" in verify(wdir)[0]
    write_lock(wdir, {"org/model": record(wdir, "org/model", "abc123")})
    assert verify(wdir) == []
    (d / "model.safetensors").write_bytes(b"\1" * 100)
    (d / "config.json").unlink()
    probs = verify(wdir)
    assert any("config.json is missing" in p for p in probs)
    assert any("model.safetensors differs" in p for p in probs)


def test_presets_and_overrides():
    assert parse_preset("fake:12.5") == ("fake", 12.5)
    with pytest.raises(ValueError, match="unknown model preset"):
        parse_preset("huge")
    s = resolve_specs("default", {"semantic": "oneformer",
                                  "segmenter": "sam-hq-official:/ckpt/sam_hq_vit_l.pth:vit_l"})
    assert s["semantic"].kind == "oneformer" and s["detector"] == PRESETS["default"]["detector"]
    assert s["segmenter"].source == "/ckpt/sam_hq_vit_l.pth"
    assert dict(s["segmenter"].options) == {"model_type": "vit_l"}


def test_hub_override_pins_a_revision(tmp_path):
    s = resolve_specs("default", {"detector": "IDEA-Research/grounding-dino-base@0123abcd"})
    assert (s["detector"].source, s["detector"].revision) == ("IDEA-Research/grounding-dino-base",
                                                             "0123abcd")
    local = tmp_path / "dino@v2"          # a local directory whose name holds '@' stays a path
    local.mkdir()
    assert resolve_specs("default", {"detector": str(local)})["detector"].source == str(local)
    with pytest.raises(ValueError, match="org/name@<revision>"):
        resolve_specs("default", {"detector": "IDEA-Research/grounding-dino-base@"})
