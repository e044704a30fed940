"""`storyboard models list`: the model files a story (or a WebUI install) can use, with their families."""

from __future__ import annotations

from pathlib import Path

from storyboard.errors import StoryboardError
from storyboard.models.inventory import InventoryEntry, list_models
from storyboard.models.registry import ModelFolders


def story_folders(story_path: Path) -> ModelFolders:
    """The folders the story's render settings search (its folders, then its WebUI root's)."""
    from storyboard.render.resolve import model_folders
    from storyboard.story.load import load_story

    loaded = load_story(story_path)
    return model_folders(loaded.story.render, loaded.base_dir)


def inventory(story_path: Path | None = None, webui_root: Path | None = None) -> list[InventoryEntry]:
    """Every checkpoint, LoRA, VAE, embedding and upscaler under the story's folders and/or a WebUI root."""
    folders = ModelFolders()
    if story_path is not None:
        folders = folders.merged(story_folders(story_path))
    if webui_root is not None:
        folders = folders.merged(ModelFolders.from_webui_root(webui_root))
    if story_path is None and webui_root is None:
        raise StoryboardError(
            "Nothing to list: name a story (its render folders are listed) or a WebUI install.",
            hint="storyboard models list stories/demo.yaml, or --webui-root ~/stable-diffusion-webui",
        )
    return list_models(folders)
