"""Weights dir lock: verify catches missing and altered files; presets resolve."""
import pytest

from labeling.presets.catalog import PRESETS, parse_preset, resolve_specs
from labeling.presets.weights import record, verify, write_lock


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


def test_oneformer_class_info_is_fetched_into_the_weights_dir_and_read_offline(tmp_path,
                                                                               monkeypatch):
    import json
    import shutil

    from transformers import OneFormerImageProcessor

    from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES
    from labeling.presets.weights import fetch_class_info, processor_kwargs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "hub"           # stands in for the dataset repo shi-labs/oneformer_demo
    hub.mkdir()
    (hub / "coco_panoptic.json").write_text(json.dumps(
        {str(i): {"name": n, "isthing": int(i < 80)} for i, n in enumerate(COCO_PANOPTIC_NAMES)}))
    model_dir = tmp_path / "w" / "shi-labs__oneformer_coco_swin_large"
    OneFormerImageProcessor(repo_path=str(hub), class_info_file="coco_panoptic.json"
                            ).save_pretrained(model_dir)
    cfg = json.loads((model_dir / "preprocessor_config.json").read_text())
    cfg["repo_path"] = "shi-labs/oneformer_demo"                    # as the hub's config says
    (model_dir / "preprocessor_config.json").write_text(json.dumps(cfg))
    assert processor_kwargs(str(model_dir)) == {}
    with pytest.raises(Exception):                                   # offline: goes to the hub
        OneFormerImageProcessor.from_pretrained(model_dir)

    calls = []

    def fake_download(repo, name, repo_type, local_dir):
        calls.append((repo, name, repo_type))
        shutil.copy(hub / name, f"{local_dir}/{name}")

    path = fetch_class_info(str(model_dir), download=fake_download)
    assert calls == [("shi-labs/oneformer_demo", "coco_panoptic.json", "dataset")]
    assert path.endswith("coco_panoptic.json")
    proc = OneFormerImageProcessor.from_pretrained(model_dir, **processor_kwargs(str(model_dir)))
    assert len(proc.metadata["class_names"]) == 133
