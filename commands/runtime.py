"""CLI commands of the runtime: `lbdeploy infer` and `lbdeploy serve` (listed in cli.COMMAND_MODULES).

Thin wrappers: they parse options, build the predictor of the model's task, and print or serve.
What a task writes (its JSON, its `--draw` files) and serves is its record's (runtime.tasks);
the pose task also runs on videos and cameras (runtime.video, runtime.tracking, runtime.stream).
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from lbdeploy.errors import ConfigError, InputError, LbdeployError
from lbdeploy.outputs import STDOUT, check_image_file, check_output_file, check_output_folder, with_parents, \
    write_json_text
from lbdeploy.pose.affine import BOX_PADDING
from lbdeploy.transforms import DEFAULT_MAX_PIXELS
from lbdeploy.runtime.backends.base import runtime_choices
from lbdeploy.runtime.detection import DEFAULT_MAX_PEOPLE, DEFAULT_NMS_IOU
from lbdeploy.runtime.limits import check_box
from lbdeploy.runtime.tracking import DEFAULT_DETECT_EVERY
from lbdeploy.runtime.video import is_video

BACKEND_CHOICES = click.Choice(runtime_choices())


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


def draw_is_folder(draw: str, several: bool) -> bool:
    """--draw names a folder: several images, an existing folder, or a name ending in '/'."""
    return several or draw.endswith("/") or Path(draw).is_dir()


def detection_options(command):
    """The person-detector options shared by `infer` and `serve`."""
    options = [
        click.option("--detector", default="hog", show_default=True, metavar="hog|none|PATH.onnx",
                     help="Finds the people when no --box is given: OpenCV's HOG pedestrian detector, none "
                          "(the whole image is one person) or an ONNX detector with MMDeploy's dets/labels outputs."),
        click.option("--score-threshold", type=float, default=None,
                     help="Drop detections scoring below this [default: hog 0.3 (SVM margin), onnx 0.3]."),
        click.option("--nms-iou", type=click.FloatRange(0.0, 1.0), default=DEFAULT_NMS_IOU, show_default=True,
                     help="Non-maximum suppression overlap."),
        click.option("--max-people", type=click.IntRange(min=1), default=DEFAULT_MAX_PEOPLE, show_default=True,
                     help="Most people per image."),
        click.option("--box-padding", type=click.FloatRange(min=1.0), default=BOX_PADDING, show_default=True,
                     help="Enlarge each person box by this factor (after fitting the model's aspect ratio)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _predictor_kwargs(backend, threads, max_pixels, detector, score_threshold, nms_iou, max_people, box_padding):
    return dict(backend=backend, threads=threads, max_pixels=max_pixels, detector=detector, box_padding=box_padding,
                detector_options=dict(score_threshold=score_threshold, nms_iou=nms_iou, max_people=max_people))


def _infer_stream(predictor, inputs, camera, flip, json_path, draw, detect_every, smooth, max_fps, max_frames,
                  progress, detector):
    """Video or camera: one JSON line per frame, an annotated video, a summary line on stderr."""
    from lbdeploy.runtime.stream import run_stream
    from lbdeploy.runtime.tracking import PoseTracker
    from lbdeploy.runtime.video import open_camera, open_video

    if len(inputs) > 1:
        raise InputError("give one video at a time (or --camera N), not several inputs")
    source = open_camera(camera, max_fps) if camera is not None else open_video(inputs[0], max_fps)
    tracker = PoseTracker(predictor, detect_every=detect_every, smoothing=smooth, flip=flip)
    output = open(with_parents(json_path), "w") if json_path and json_path != STDOUT else nullcontext(sys.stdout)
    with source, output as lines:
        stats = run_stream(source, tracker, json_lines=lines, draw_path=draw, max_frames=max_frames,
                           progress=progress, no_person_warning=_no_person_warning(detector))
    click.echo(f"{stats.frames} frames in {stats.seconds:.1f} s ({stats.fps:.1f} frames/s, detector on "
               f"{stats.detections}); {stats.broken} broken frames skipped, {stats.skipped} dropped by --max-fps",
               err=True)
    for path in filter(None, (json_path if json_path != STDOUT else None, draw)):
        click.echo(f"Wrote {path}", err=True)


def _no_person_warning(detector: str) -> str:
    """What to say when a video's first frames show nobody to the detector (a template with {frames})."""
    fix = ("pass an ONNX person detector (--detector PATH.onnx), or --detector none when the person fills the "
           "frame" if detector == "hog" else "try another --detector, or --detector none when the person fills the frame")
    if detector == "hog":
        fix += "; HOG finds upright people about 100 px tall or more"
    return f"Warning: no person found in the first {{frames}} frames by the {detector} detector; {fix}."


def check_draw(draw: str, images: int, folder: bool, video: bool) -> None:
    """Refuse a --draw path that cannot be written, before any work (lbdeploy.outputs): a folder for
    several images (not a file, nor a name with an image suffix), else an image (or video) file."""
    from PIL import Image

    if video:
        check_output_file(draw, "--draw")
    elif not folder:
        check_image_file(draw, "--draw")
    else:
        Image.init()
        if images > 1 and (Path(draw).is_file() or Path(draw).suffix.lower() in Image.registered_extensions()):
            raise InputError(f"--draw {draw} names a file, but {images} images were given; pass a folder "
                             "(e.g. --draw overlays/), which gets the drawings of each image under its name")
        check_output_folder(draw, "--draw")


def _given(ctx: click.Context) -> list[str]:
    """The parameter names of the options the user set (not left at their defaults)."""
    from click.core import ParameterSource

    return [param.name for param in ctx.command.params
            if ctx.get_parameter_source(param.name) not in (ParameterSource.DEFAULT, None)]


def _refuse_options(ctx: click.Context, record, artifact, images, video: bool) -> None:
    """Refuse the `infer` options the model's task does not take (an option of another task's
    `infer_options`, given), and videos for a task that does not run on them."""
    from lbdeploy.runtime.tasks import RUNTIME_TASKS

    flags = {param.name: param.opts[0] for param in ctx.command.params}
    others = {name for other in RUNTIME_TASKS.values() for name in other.infer_options}
    unused = [name for name in _given(ctx) if name in others and name not in record.infer_options]
    if unused:
        owners = sorted({other.task.name for other in RUNTIME_TASKS.values() for name in unused
                         if name in other.infer_options})
        named = [flags[name] for name in unused]
        listed = " and ".join(filter(None, [", ".join(named[:-1]), named[-1]]))
        kind = "/".join(owners)
        what = f"is a {kind} option" if len(unused) == 1 else f"are {kind} options"
        raise ConfigError(f"{listed} {what}; {artifact} is a {record.task.name} model (it maps the whole image): "
                          "drop them")
    if video and "video" not in record.infer_options:
        name = next((image for image in images if is_video(image)), None)
        what = f"{name} is a video" if name else "a camera gives video"
        raise ConfigError(f"{what}; videos are not supported for {record.task.name} ({artifact} is a "
                          f"{record.task.name} model): pass images, e.g. frames extracted with ffmpeg")


def count(number: int, singular: str, plural: str | None = None) -> str:
    """'1 image', '3 images' ('1 person', '2 people' with the plural given)."""
    return f"{number} {singular if number == 1 else (plural or singular + 's')}"


@click.command("infer")
@click.argument("artifact", type=click.Path(exists=True))
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--camera", type=click.IntRange(min=0), default=None, metavar="N",
              help="Read camera /dev/videoN (V4L2) instead of files; Ctrl-C stops.")
@click.option("--box", "boxes", multiple=True, metavar="X,Y,W,H",
              help="Person box in pixels (repeat for several people); default: the detector's boxes.")
@detection_options
@click.option("--flip/--no-flip", default=False, help="Flip test: average with the mirrored image.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write keypoints JSON here (video: JSON lines, one per frame; default or '-': print it).")
@click.option("--draw", type=click.Path(),
              help="Write the overlay image here (a folder, ending in '/', gets <image name>.pose.png; a "
                   ".mp4/.avi for a video); saliency: the map here, the overlay as <stem>.overlay.png.")
@click.option("--detect-every", type=click.IntRange(min=1), default=DEFAULT_DETECT_EVERY, show_default=True,
              help="Video: run the detector every N frames (and when a person is lost); track in between.")
@click.option("--smooth/--no-smooth", default=False, help="Video: One-Euro smoothing of the keypoints.")
@click.option("--max-fps", type=click.FloatRange(min=0.01), default=None,
              help="Video: pose at most this many frames per second (others are dropped).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Video: stop after N posed frames.")
@click.option("--progress/--no-progress", default=True, help="Video: progress bar with frames/s on stderr.")
@click.option("--backend", type=BACKEND_CHOICES, default="auto", help="Inference backend.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Backend intra-op threads.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, help="Refuse larger images.")
@click.pass_context
def infer(ctx, artifact, images, camera, boxes, detector, score_threshold, nms_iou, max_people, box_padding, flip,
          json_path, draw, detect_every, smooth, max_fps, max_frames, progress, backend, threads, max_pixels):
    """Estimate human poses in IMAGES, a video or a camera with an exported ARTIFACT folder (or a model.pt);
    with a saliency model (CPD / CPD-LB), write saliency maps of IMAGES; with a classifier
    (ResNet-56 / ResNet-LBB-56), print the top-5 classes of IMAGES.

    Keypoints are (x, y, score) per joint in original-image pixels. Without --box a person
    detector finds the people; in a video they are tracked with stable ids. Every image is
    processed even when some cannot be read; those are listed at the end and the exit code is 2.
    A saliency model's JSON holds statistics per image; `--draw map.png` writes the map there and
    the overlay to map.overlay.png.

    \b
    Example:
      lbdeploy infer out/ person.jpg --flip --json pose.json --draw pose.png
      lbdeploy infer out/ person.jpg --box 40,10,120,300 --detector none
      lbdeploy infer out/ clip.mp4 --draw out.mp4 --json poses.jsonl
      lbdeploy infer out/ --camera 0 --max-fps 10 --json poses.jsonl
      lbdeploy infer cpd-out/ photo.jpg --draw saliency.png --json saliency.json
      lbdeploy infer cifar-out/ photo.jpg --draw classes.png
    """
    from lbdeploy.transforms import load_image
    from lbdeploy.runtime.tasks import task_of_source

    if (camera is None) == (not images):
        raise InputError("give IMAGES or a video file, or --camera N (not both)")
    video = camera is not None or any(map(is_video, images))
    several = len(images) > 1
    folder = bool(draw) and not video and draw_is_folder(draw, several)
    if json_path and json_path != STDOUT:
        check_output_file(json_path, "--json")
    if draw:
        check_draw(draw, len(images), folder, video)
    record = task_of_source(artifact)
    _refuse_options(ctx, record, artifact, images, video)
    parsed_boxes = [_parse_box(b) for b in boxes] or None
    predict_options = {"boxes": parsed_boxes, "flip": flip} if "boxes" in record.infer_options else {}
    predictor = record.predictor_class(artifact, **record.predictor_kwargs(**_predictor_kwargs(
        backend, threads, max_pixels, detector, score_threshold, nms_iou, max_people, box_padding)))
    if video:
        if parsed_boxes:
            raise InputError("--box applies to images; in a video the detector and the tracker find the people")
        return _infer_stream(predictor, images, camera, flip, json_path, draw, detect_every, smooth, max_fps,
                             max_frames, progress, detector)
    if folder:
        Path(draw).mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    for image_path in map(Path, images):
        try:
            pixels = load_image(image_path, max_pixels)
            result = predictor.predict(pixels, **predict_options)
        except LbdeployError as err:
            if not several:
                raise
            failures.append(f"{image_path}: {err}")
            continue
        notice = record.notice(result, image_path, detector)
        if notice:
            click.echo(notice, err=True)
        results.append(record.to_json(predictor, result, image_id=str(image_path)))
        if draw:
            for target, picture, what in record.drawings(pixels, result, predictor, draw, image_path, folder):
                picture.save(with_parents(target))  # in the format of its name's suffix (checked by check_draw)
                click.echo(f"Wrote {target}" + (f" ({what})" if what else ""), err=True)
    if write_json_text(json_path, json.dumps(record.document(predictor, results), indent=2), click.echo):
        click.echo(f"Wrote {json_path} ({record.count(results)})", err=True)
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
@click.option("--body-timeout-s", type=click.FloatRange(min=0.01), default=30.0,
              help="Time a request has to send its whole body (408 past it).")
@click.option("--header-timeout-s", type=click.FloatRange(min=0.01), default=10.0,
              help="Time a connection has to send its request line and headers (closed past it).")
@click.option("--backend", type=BACKEND_CHOICES, default="auto", help="Inference backend.")
@click.option("--engine", type=click.Choice(["uvicorn", "ray"]), default="uvicorn",
              help="uvicorn: one process; ray: Ray Serve replicas on a local Ray instance.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, help="Ray Serve replicas (--engine ray).")
@detection_options
def serve(artifact, host, port, workers, threads, token, max_body_mb, max_pixels, timeout_s, body_timeout_s,
          header_timeout_s, backend, engine, replicas, detector, score_threshold, nms_iou, max_people, box_padding):
    """Serve pose estimation (or saliency maps) over HTTP (OpenAPI docs at /docs).

    POST /v1/pose (image bytes or multipart 'file', optional boxes=[[x,y,w,h],...]) returns
    keypoints JSON (people found by --detector without boxes); POST /v1/pose/batch (multipart
    'files', several images) returns one entry per image; POST /v1/heatmaps returns .npy;
    GET /v1/model, /healthz, /metrics. A saliency model answers POST /v1/saliency instead: the map
    as PNG, or statistics with ?format=json.

    \b
    Example:
      lbdeploy serve out/ --port 8080 --workers 2
      curl --data-binary @person.jpg 'http://127.0.0.1:8080/v1/pose?flip=true'
      curl --data-binary @photo.jpg -o map.png 'http://127.0.0.1:8080/v1/saliency'
    """
    from lbdeploy.runtime.server import ServerSettings
    from lbdeploy.runtime.tasks import PredictorOfTask, task_of_source

    settings = ServerSettings(token=token, max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels,
                              timeout_s=timeout_s, body_timeout_s=body_timeout_s, header_timeout_s=header_timeout_s,
                              workers=workers)
    record = task_of_source(artifact)
    kwargs = record.predictor_kwargs(**_predictor_kwargs(backend, threads, max_pixels, detector, score_threshold,
                                                         nms_iou, max_people, box_padding))
    predictor = record.predictor_class(artifact, **kwargs)  # fails before binding
    if engine == "ray":
        from lbdeploy.runtime.ray_serve import serve_with_ray

        factory = PredictorOfTask(Path(artifact).resolve(), **kwargs)
        serve_with_ray(factory, host, port, settings, replicas)
    else:
        from lbdeploy.runtime.server import serve as serve_uvicorn

        serve_uvicorn(lambda: predictor, host, port, settings,
                      announce=lambda url: click.echo(f"Serving {artifact} on {url} (docs at /docs)", err=True))


COMMANDS = [infer, serve]
