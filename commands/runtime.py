"""CLI commands of the runtime: `lbdeploy infer` and `lbdeploy serve` (listed in cli.COMMAND_MODULES).

Thin wrappers: they parse options, build a Predictor, and print or serve. The library entry
points are runtime.predictor.Predictor, runtime.results and runtime.server.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lbdeploy.errors import InputError, LbdeployError
from lbdeploy.transforms import DEFAULT_MAX_PIXELS
from runtime.backends.base import RUNTIME_CHOICES

BACKEND_CHOICES = click.Choice(RUNTIME_CHOICES)


def _parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--box {text!r} must be four numbers x,y,w,h (e.g. --box 10,20,100,200)")
    return values


def _draw_target(draw: str, image: Path, several: bool) -> Path:
    return Path(draw) / f"{image.stem}.pose.png" if several else Path(draw)


def _check_draw_folder(draw: str, images: int) -> None:
    """With several images --draw is a folder: refuse an existing file or a name with an image suffix."""
    from PIL import Image

    Image.init()
    path = Path(draw)
    if path.is_file() or path.suffix.lower() in Image.registered_extensions():
        raise InputError(f"--draw {draw} names a file, but {images} images were given; pass a folder "
                         "(e.g. --draw overlays/), which gets one <image name>.pose.png per image")


def _people(count: int) -> str:
    return "1 person" if count == 1 else f"{count} people"


@click.command("infer")
@click.argument("artifact", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--box", "boxes", multiple=True, metavar="X,Y,W,H",
              help="Person box in pixels (repeat for several people); default: the whole image.")
@click.option("--flip/--no-flip", default=False, help="Flip test: average with the mirrored image.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write COCO-style keypoints JSON here (default: print it).")
@click.option("--draw", type=click.Path(),
              help="Write the overlay PNG here; with several images, a folder (one IMAGE.pose.png each).")
@click.option("--backend", type=BACKEND_CHOICES, default="auto", help="Inference backend.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Backend intra-op threads.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, help="Refuse larger images.")
def infer(artifact, images, boxes, flip, json_path, draw, backend, threads, max_pixels):
    """Estimate human poses in IMAGES with an exported ARTIFACT folder (or a model.pt).

    Keypoints are (x, y, score) per joint in original-image pixels. Every image is processed even
    when some cannot be read; those are listed at the end and the exit code is 2.

    \b
    Example:
      lbdeploy infer out/ person.jpg --box 40,10,120,300 --flip --json pose.json --draw pose.png
    """
    from runtime.predictor import Predictor
    from runtime.results import draw_pose, pose_to_json
    from lbdeploy.transforms import load_image

    parsed_boxes = [_parse_box(b) for b in boxes] or None
    several = len(images) > 1
    if draw and several:
        _check_draw_folder(draw, len(images))
    predictor = Predictor(artifact, backend=backend, threads=threads, max_pixels=max_pixels)
    if draw and several:
        Path(draw).mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    for image_path in map(Path, images):
        try:
            pixels = load_image(image_path, max_pixels)
            result = predictor.predict(pixels, boxes=parsed_boxes, flip=flip)
        except LbdeployError as err:
            if not several:
                raise
            failures.append(f"{image_path}: {err}")
            continue
        results.append(pose_to_json(result, predictor.joint_names, predictor.skeleton, image_id=str(image_path)))
        if draw:
            target = _draw_target(draw, image_path, several)
            draw_pose(pixels, result, predictor.skeleton).save(target)
            click.echo(f"Wrote {target}", err=True)
    document = {"model": predictor.manifest.get("arch"), "images": results}
    text = json.dumps(document, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n")
        click.echo(f"Wrote {json_path} ({_people(sum(len(r['people']) for r in results))})", err=True)
    else:
        click.echo(text)
    for failure in failures:
        click.echo(f"Error: {failure}", err=True)
    if failures:
        raise InputError(f"{len(failures)} of {len(images)} images could not be processed (listed above); "
                         "the others were written")


@click.command("serve")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--host", default="127.0.0.1", help="Interface to bind (0.0.0.0 exposes the server to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, help="TCP port.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Inference threads (per replica).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Backend intra-op threads.")
@click.option("--token", envvar="LBDEPLOY_TOKEN", default=None, show_envvar=True,
              help="Require 'Authorization: Bearer TOKEN' (prefer the environment variable).")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=16.0, help="Largest request body.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, help="Largest image (w*h).")
@click.option("--timeout-s", type=click.FloatRange(min=0.01), default=30.0, help="Per-request inference limit.")
@click.option("--backend", type=BACKEND_CHOICES, default="auto", help="Inference backend.")
@click.option("--engine", type=click.Choice(["uvicorn", "ray"]), default="uvicorn",
              help="uvicorn: one process; ray: Ray Serve replicas on a local Ray instance.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, help="Ray Serve replicas (--engine ray).")
def serve(artifact, host, port, workers, threads, token, max_body_mb, max_pixels, timeout_s, backend, engine, replicas):
    """Serve pose estimation over HTTP (OpenAPI docs at /docs).

    POST /v1/pose (image bytes or multipart 'file', optional boxes=[[x,y,w,h],...]) returns
    keypoints JSON; POST /v1/heatmaps returns .npy; GET /v1/model, /healthz, /metrics.

    \b
    Example:
      lbdeploy serve out/ --port 8080 --workers 2
      curl --data-binary @person.jpg 'http://127.0.0.1:8080/v1/pose?flip=true'
    """
    from runtime.predictor import Predictor, PredictorFactory
    from runtime.server import ServerSettings

    settings = ServerSettings(token=token, max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels,
                              timeout_s=timeout_s, workers=workers)
    predictor = Predictor(artifact, backend=backend, threads=threads, max_pixels=max_pixels)  # fails before binding
    if engine == "ray":
        from runtime.ray_serve import serve_with_ray

        factory = PredictorFactory(Path(artifact).resolve(), backend=backend, threads=threads, max_pixels=max_pixels)
        serve_with_ray(factory, host, port, settings, replicas)
    else:
        from runtime.server import serve as serve_uvicorn

        click.echo(f"Serving {artifact} on http://{host}:{port} (docs at /docs)", err=True)
        serve_uvicorn(lambda: predictor, host, port, settings)


COMMANDS = [infer, serve]
