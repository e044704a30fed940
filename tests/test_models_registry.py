from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from storyboard.errors import ModelError
from storyboard.models.registry import ModelFolders, Registry, safetensors_header, safetensors_metadata


def _st(path: Path, metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    return path


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    root = tmp_path / "webui"
    _st(root / "models/Stable-diffusion/AnythingV5Ink_ink.safetensors")
    _st(root / "models/Stable-diffusion/anime/counterfeitV30.safetensors")
    (root / "models/Stable-diffusion/old.ckpt").write_bytes(b"pickle")
    diff = root / "models/Stable-diffusion/tiny-sd"
    (diff / "unet").mkdir(parents=True)
    (diff / "model_index.json").write_text("{}")
    _st(diff / "unet/diffusion_pytorch_model.safetensors")
    _st(root / "models/Lora/chars/Iku_Nakatani-000016_v1.0.safetensors", {"ss_output_name": "iku_nakatani"})
    _st(root / "models/Lora/style_ink.safetensors", {"ss_output_name": "style_ink"})
    _st(root / "models/LyCORIS/detail_tweaker.safetensors")
    _st(root / "models/VAE/kl-f8-anime2.safetensors")
    _st(root / "embeddings/EasyNegative.safetensors")
    return root


def test_from_webui_root_folders(tmp_path: Path) -> None:
    f = ModelFolders.from_webui_root(tmp_path)
    assert f.checkpoints == [tmp_path / "models/Stable-diffusion"]
    assert f.loras == [tmp_path / "models/Lora", tmp_path / "models/LyCORIS"]
    assert f.vaes == [tmp_path / "models/VAE"]
    assert f.embeddings == [tmp_path / "embeddings"]
    assert f.upscalers == [tmp_path / "models/ESRGAN"]


def test_find_by_stem_recursive_and_case(webui: Path) -> None:
    reg = Registry(ModelFolders.from_webui_root(webui))
    assert (
        reg.find_checkpoint("counterfeitV30").path
        == webui / "models/Stable-diffusion/anime/counterfeitV30.safetensors"
    )
    assert reg.find_checkpoint("AnythingV5Ink_ink.safetensors").name == "AnythingV5Ink_ink"
    assert reg.find_checkpoint("anythingv5ink_ink").name == "AnythingV5Ink_ink"
    assert reg.find_vae("kl-f8-anime2").path.name == "kl-f8-anime2.safetensors"
    assert reg.find_embedding("EasyNegative").path == webui / "embeddings/EasyNegative.safetensors"
    assert reg.find_lora("detail_tweaker").path.parent.name == "LyCORIS"


def test_diffusers_folder_is_one_checkpoint(webui: Path) -> None:
    reg = Registry(ModelFolders.from_webui_root(webui))
    names = sorted(f.name for f in reg.list_checkpoints())
    assert names == ["AnythingV5Ink_ink", "counterfeitV30", "old", "tiny-sd"]
    assert reg.find_checkpoint("tiny-sd").path == webui / "models/Stable-diffusion/tiny-sd"
    assert [f.name for f in reg.list_checkpoints() if f.pickle] == ["old"]


def test_lora_alias_from_metadata(webui: Path) -> None:
    reg = Registry(ModelFolders.from_webui_root(webui))
    by_alias = reg.find_lora("iku_nakatani")
    assert by_alias.path.name == "Iku_Nakatani-000016_v1.0.safetensors"
    assert by_alias.alias == "iku_nakatani"
    assert reg.find_lora("Iku_Nakatani-000016_v1.0") == by_alias
    # An ss_output_name equal to the stem is not a separate alias.
    assert reg.find_lora("style_ink").alias is None


def test_path_refs_absolute_and_relative(webui: Path) -> None:
    reg = Registry(ModelFolders.from_webui_root(webui), base_dir=webui)
    absolute = webui / "models/VAE/kl-f8-anime2.safetensors"
    assert reg.find_vae(str(absolute)).path == absolute
    assert reg.find_vae("models/VAE/kl-f8-anime2.safetensors").path == absolute
    with pytest.raises(ModelError, match="does not exist"):
        reg.find_vae("models/VAE/missing.safetensors")
    # WebUI-style title: the path inside the checkpoints folder.
    sub = webui / "models/Stable-diffusion/anime/counterfeitV30.safetensors"
    assert reg.find_checkpoint("anime/counterfeitV30.safetensors").path == sub
    # A bare file name with extension is a name, found anywhere below the folders.
    assert (
        Registry(ModelFolders.from_webui_root(webui)).find_checkpoint("counterfeitV30.safetensors").path
        == sub
    )


def test_missing_lists_close_names_and_folders(webui: Path) -> None:
    reg = Registry(ModelFolders.from_webui_root(webui))
    with pytest.raises(ModelError) as info:
        reg.find_lora("iku_nakatan")
    msg = str(info.value)
    assert "iku_nakatani" in msg
    assert str(webui / "models/Lora") in msg and str(webui / "models/LyCORIS") in msg
    with pytest.raises(ModelError, match="AnythingV5Ink_ink"):
        reg.find_checkpoint("AnythingV5")


def test_ambiguous_stem_lists_both(webui: Path) -> None:
    _st(webui / "models/Lora/other/style_ink.safetensors")
    reg = Registry(ModelFolders.from_webui_root(webui))
    with pytest.raises(ModelError) as info:
        reg.find_lora("style_ink")
    msg = str(info.value)
    assert str(webui / "models/Lora/style_ink.safetensors") in msg
    assert str(webui / "models/Lora/other/style_ink.safetensors") in msg


def test_safetensors_twin_of_pickle_wins(webui: Path) -> None:
    _st(webui / "models/Stable-diffusion/old.safetensors")
    reg = Registry(ModelFolders.from_webui_root(webui))
    assert reg.find_checkpoint("old").path.suffix == ".safetensors"


def test_header_reads_metadata_without_tensors(tmp_path: Path) -> None:
    f = _st(tmp_path / "x.safetensors", {"ss_output_name": "x", "n": "1"})
    assert safetensors_metadata(f) == {"ss_output_name": "x", "n": "1"}
    header = safetensors_header(f)
    assert header["w"] == {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    # Equal to parsing the header by hand.
    blob = f.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    assert header == json.loads(blob[8 : 8 + n])


def test_broken_header_names_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.safetensors"
    f.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelError, match="broken.safetensors"):
        safetensors_metadata(f)
    g = tmp_path / "garbled.safetensors"
    g.write_bytes((4).to_bytes(8, "little") + b"\xff\xfe{]")
    with pytest.raises(ModelError, match="garbled.safetensors"):
        safetensors_metadata(g)


def test_broken_lora_does_not_hide_others(webui: Path) -> None:
    (webui / "models/Lora/broken.safetensors").write_bytes(b"\x00")
    reg = Registry(ModelFolders.from_webui_root(webui))
    assert reg.find_lora("iku_nakatani").name == "Iku_Nakatani-000016_v1.0"
    assert reg.find_lora("broken").alias is None


def test_bare_name_prefers_models_folder_over_story_folder(webui: Path, tmp_path: Path) -> None:
    story_dir = tmp_path / "story"
    (story_dir / "AnythingV5Ink_ink").mkdir(parents=True)  # e.g. a folder of notes with the model's name
    _st(story_dir / "AnythingV5Ink_ink.safetensors")
    reg = Registry(ModelFolders.from_webui_root(webui), base_dir=story_dir)
    found = reg.find_checkpoint("AnythingV5Ink_ink")
    assert found.path == webui / "models/Stable-diffusion/AnythingV5Ink_ink.safetensors"
    # a path-like reference still means the story's own file
    assert (
        reg.find_checkpoint("AnythingV5Ink_ink.safetensors").path
        == story_dir / "AnythingV5Ink_ink.safetensors"
    )
