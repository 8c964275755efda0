"""`lbdeploy infer` on a saliency model: what it writes (called by commands.runtime.infer).

Not a command module of its own: `infer` and `serve` choose the pose or the saliency path from the
model's task (runtime.loading.model_task). Files written with `--draw PATH`:

- one image: the saliency map at PATH (8-bit grayscale, the image's size, in PATH's format: .png,
  .jpg, ...) and the overlay next to it as `<PATH stem>.overlay.png`;
- several images, or PATH a folder (existing or ending in '/'): `<image stem>.saliency.png` and
  `<image stem>.overlay.png` in it.

The JSON (`--json`, or printed) holds per-image statistics (runtime.saliency_results.saliency_to_json).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lbdeploy.commands.runtime import count
from lbdeploy.errors import ConfigError


def saliency_draw_targets(draw: str, image: Path, folder: bool) -> tuple[Path, Path]:
    """(map path, overlay path) that `--draw draw` gives for `image` (see the module docstring)."""
    if folder:
        return Path(draw) / f"{image.stem}.saliency.png", Path(draw) / f"{image.stem}.overlay.png"
    target = Path(draw)
    return target, target.with_name(f"{target.stem}.overlay.png")


def infer_saliency(artifact, images, json_path, draw, folder: bool, backend, threads, max_pixels,
                   pose_options: list[str]) -> None:
    """Run a saliency model on `images` and write/print what `lbdeploy infer` promises.

    Args:
        artifact: a saliency artifact folder or model.pt; images: image paths.
        json_path / draw: as the `infer` options (checked by it); folder: --draw names a folder.
        backend, threads, max_pixels: for the predictor.
        pose_options: the pose-only options the user gave (refused).
    Raises:
        ConfigError: pose-only options were given, or a video.
    """
    from lbdeploy.outputs import with_parents, write_json_text
    from lbdeploy.transforms import load_image
    from lbdeploy.runtime.saliency import SaliencyPredictor
    from lbdeploy.runtime.saliency_results import draw_saliency, saliency_map_image, saliency_to_json
    from lbdeploy.runtime.video import is_video

    if pose_options:
        named = " and ".join(filter(None, [", ".join(pose_options[:-1]), pose_options[-1]]))
        raise ConfigError(f"{named} {'is a pose option' if len(pose_options) == 1 else 'are pose options'}; "
                          f"{artifact} is a saliency model (it maps the whole image): drop them")
    videos = [name for name in images if is_video(name)]
    if videos:
        raise ConfigError(f"{videos[0]} is a video; videos are not supported for saliency ({artifact} is a saliency "
                          "model): pass images, e.g. frames extracted with ffmpeg")
    predictor = SaliencyPredictor(artifact, backend=backend, threads=threads, max_pixels=max_pixels)
    if folder:
        Path(draw).mkdir(parents=True, exist_ok=True)
    results = []
    for image_path in map(Path, images):
        pixels = load_image(image_path, max_pixels)
        result = predictor.predict(pixels)
        results.append(saliency_to_json(result, image_id=str(image_path)))
        if draw:
            map_path, overlay_path = saliency_draw_targets(draw, image_path, folder)
            saliency_map_image(result).save(with_parents(map_path))
            draw_saliency(pixels, result).save(overlay_path, format="PNG")
            click.echo(f"Wrote {map_path} (saliency map) and {overlay_path} (overlay)", err=True)
    text = json.dumps({"model": predictor.manifest.get("arch"), "task": "saliency", "images": results}, indent=2)
    if write_json_text(json_path, text, click.echo):
        click.echo(f"Wrote {json_path} ({count(len(results), 'image')})", err=True)
