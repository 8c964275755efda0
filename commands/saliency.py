"""`lbdeploy infer` on a saliency model: what it writes (called by commands.runtime.infer).

Not a command module of its own: `infer` and `serve` choose the pose or the saliency path from the
model's task (runtime.loading.model_task). Files written with `--draw PATH`:

- one image: the saliency map at PATH (8-bit grayscale, the image's size) and the overlay next
  to it as `<PATH stem>.overlay.png`;
- several images (PATH is a folder): `<image stem>.saliency.png` and `<image stem>.overlay.png`.

The JSON (`--json`, or printed) holds per-image statistics (runtime.saliency_results.saliency_to_json).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lbdeploy.errors import ConfigError


def saliency_draw_targets(draw: str, image: Path, several: bool) -> tuple[Path, Path]:
    """(map path, overlay path) that `--draw draw` gives for `image` (see the module docstring)."""
    if several:
        return Path(draw) / f"{image.stem}.saliency.png", Path(draw) / f"{image.stem}.overlay.png"
    target = Path(draw)
    return target, target.with_name(f"{target.stem}.overlay.png")


def infer_saliency(artifact, images, json_path, draw, backend, threads, max_pixels, pose_options: list[str]) -> None:
    """Run a saliency model on `images` and write/print what `lbdeploy infer` promises.

    Args:
        artifact: a saliency artifact folder or model.pt; images: image paths.
        json_path / draw: as the `infer` options; backend, threads, max_pixels: for the predictor.
        pose_options: the pose-only options the user gave (refused).
    Raises:
        ConfigError: pose-only options were given.
    """
    from lbdeploy.transforms import load_image
    from lbdeploy.runtime.saliency import SaliencyPredictor
    from lbdeploy.runtime.saliency_results import draw_saliency, saliency_map_image, saliency_to_json

    if pose_options:
        raise ConfigError(f"{' and '.join(pose_options)} {'is a pose option' if len(pose_options) == 1 else 'are pose options'}; "
                          f"{artifact} is a saliency model (it maps the whole image): drop them")
    predictor = SaliencyPredictor(artifact, backend=backend, threads=threads, max_pixels=max_pixels)
    several = len(images) > 1
    if draw and several:
        Path(draw).mkdir(parents=True, exist_ok=True)
    results = []
    for image_path in map(Path, images):
        pixels = load_image(image_path, max_pixels)
        result = predictor.predict(pixels)
        results.append(saliency_to_json(result, image_id=str(image_path)))
        if draw:
            map_path, overlay_path = saliency_draw_targets(draw, image_path, several)
            saliency_map_image(result).save(map_path, format="PNG")
            draw_saliency(pixels, result).save(overlay_path, format="PNG")
            click.echo(f"Wrote {map_path} (saliency map) and {overlay_path} (overlay)", err=True)
    text = json.dumps({"model": predictor.manifest.get("arch"), "task": "saliency", "images": results}, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n")
        click.echo(f"Wrote {json_path} ({len(results)} images)", err=True)
    else:
        click.echo(text)
