"""CLI commands of the runtime: `lbdeploy infer` and `lbdeploy serve` (listed in cli.COMMAND_MODULES).

Thin wrappers: they parse options, build a Predictor, and print or serve. The library entry
points are runtime.predictor.Predictor, runtime.results and runtime.server.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lbdeploy.errors import InputError
from lbdeploy.transforms import DEFAULT_MAX_PIXELS
from runtime.backends.base import RUNTIME_CHOICES
from runtime.limits import check_box

BACKEND_CHOICES = click.Choice(RUNTIME_CHOICES)


def _parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--box {text!r} must be four numbers x,y,w,h (e.g. --box 10,20,100,200)")
    try:
        return check_box(values)
    except InputError as err:
        raise InputError(f"--box {text!r}: {err}") from None


def _draw_target(draw: str, image: Path, several: bool) -> Path:
    return Path(draw) / f"{image.stem}.pose.png" if several else Path(draw)


@click.command("infer")
@click.argument("artifact", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--box", "boxes", multiple=True, metavar="X,Y,W,H",
              help="Person box in pixels (repeat for several people); default: the whole image.")
@click.option("--flip/--no-flip", default=False, help="Flip test: average with the mirrored image.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write COCO-style keypoints JSON here (default: print it).")
@click.option("--draw", type=click.Path(),
              help="Write the overlay PNG here (a folder when several images); saliency: the map here, "
                   "the overlay as <stem>.overlay.png.")
@click.option("--backend", type=BACKEND_CHOICES, default="auto", help="Inference backend.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Backend intra-op threads.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, help="Refuse larger images.")
def infer(artifact, images, boxes, flip, json_path, draw, backend, threads, max_pixels):
    """Estimate human poses in IMAGES with an exported ARTIFACT folder (or a model.pt); with a saliency
    model (CPD / CPD-LB), write saliency maps.

    Keypoints are (x, y, score) per joint in original-image pixels. A saliency model's JSON holds
    statistics per image; `--draw map.png` writes the map there and the overlay to map.overlay.png.

    \b
    Example:
      lbdeploy infer out/ person.jpg --box 40,10,120,300 --flip --json pose.json --draw pose.png
      lbdeploy infer cpd-out/ photo.jpg --draw saliency.png --json saliency.json
    """
    from runtime.loading import model_task
    from runtime.predictor import Predictor
    from runtime.results import draw_pose, pose_to_json
    from lbdeploy.transforms import load_image

    if model_task(artifact) == "saliency":
        from commands.saliency import infer_saliency

        pose_options = [name for name, given in (("--box", boxes), ("--flip", flip)) if given]
        return infer_saliency(artifact, images, json_path, draw, backend, threads, max_pixels, pose_options)

    parsed_boxes = [_parse_box(b) for b in boxes] or None
    predictor = Predictor(artifact, backend=backend, threads=threads, max_pixels=max_pixels)
    several = len(images) > 1
    if draw and several:
        Path(draw).mkdir(parents=True, exist_ok=True)
    results = []
    for image_path in map(Path, images):
        pixels = load_image(image_path, max_pixels)
        result = predictor.predict(pixels, boxes=parsed_boxes, flip=flip)
        results.append(pose_to_json(result, predictor.joint_names, predictor.skeleton, image_id=str(image_path)))
        if draw:
            target = _draw_target(draw, image_path, several)
            draw_pose(pixels, result, predictor.skeleton).save(target)
            click.echo(f"Wrote {target}", err=True)
    document = {"model": predictor.manifest.get("arch"), "images": results}
    text = json.dumps(document, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n")
        click.echo(f"Wrote {json_path} ({sum(len(r['people']) for r in results)} people)", err=True)
    else:
        click.echo(text)


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
    """Serve pose estimation (or saliency maps) over HTTP (OpenAPI docs at /docs).

    POST /v1/pose (image bytes or multipart 'file', optional boxes=[[x,y,w,h],...]) returns
    keypoints JSON; POST /v1/heatmaps returns .npy; GET /v1/model, /healthz, /metrics. A saliency
    model answers POST /v1/saliency instead: the map as PNG, or statistics with ?format=json.

    \b
    Example:
      lbdeploy serve out/ --port 8080 --workers 2
      curl --data-binary @person.jpg 'http://127.0.0.1:8080/v1/pose?flip=true'
      curl --data-binary @photo.jpg -o map.png 'http://127.0.0.1:8080/v1/saliency'
    """
    from runtime.loading import model_task
    from runtime.predictor import Predictor, PredictorFactory
    from runtime.saliency import SaliencyPredictor, SaliencyPredictorFactory
    from runtime.server import ServerSettings

    settings = ServerSettings(token=token, max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels,
                              timeout_s=timeout_s, workers=workers)
    predictor_class, factory_class = ((SaliencyPredictor, SaliencyPredictorFactory) if model_task(artifact) == "saliency"
                                      else (Predictor, PredictorFactory))
    predictor = predictor_class(artifact, backend=backend, threads=threads, max_pixels=max_pixels)  # fails before binding
    if engine == "ray":
        from runtime.ray_serve import serve_with_ray

        factory = factory_class(Path(artifact).resolve(), backend=backend, threads=threads, max_pixels=max_pixels)
        serve_with_ray(factory, host, port, settings, replicas)
    else:
        from runtime.server import serve as serve_uvicorn

        click.echo(f"Serving {artifact} on http://{host}:{port} (docs at /docs)", err=True)
        serve_uvicorn(lambda: predictor, host, port, settings)


COMMANDS = [infer, serve]
