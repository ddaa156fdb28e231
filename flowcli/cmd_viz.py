"""``flowcli viz``: render flow files as colour images or a video."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterable

import click

from .cli import (IMAGE_EXTENSIONS, FiniteFloatRange, emit_json, expand_inputs, json_option, overwrite_option,
                  progress, quiet_option, status)
from .errors import FlowcliError, InputError

# --fps range. Mp4Writer keeps the rate as a fraction with a denominator of at most 1001, so rates below
# ~1/2002 become 0 (refused) and 1/1000 is about the slowest it can store; very high rates overflow the
# container's time base (1e12 does). One frame per 1000 s to 1000 frames per second covers every use.
MIN_FPS, MAX_FPS = 0.001, 1000.0

# =========================================================================== viz

def _read_image(path: Path):
    """The source frame as RGB, read as ``flowcli estimate`` reads frames.

    Not cv2.imread: that returns a truncated JPEG as a half-grey picture (and libjpeg
    prints a warning); cv2.imdecode refuses it, so viz says the image is damaged.
    """
    from .sources import read_image_rgb

    if not path.exists():
        raise InputError(f"{path}: no such image")
    return read_image_rgb(path)


def _frame_index(flow: Path) -> int | None:
    """The frame index a flow file is named by (``000012.flo`` -> 12, as estimate names them), else None."""
    return int(flow.stem) if flow.stem.isascii() and flow.stem.isdigit() else None


def _image_list(image: Path, flows: list[Path]) -> list[Path]:
    """The source frame of each flow: one file for all, or the frames of a folder.

    In a folder, frame k is its k-th image, numbered as ``flowcli estimate FOLDER`` numbers them
    (:func:`flowcli.sources.folder_images`). Flows named by a frame index go with that frame,
    whatever --start/--step produced them; flows with other names (no index to go by) go with the
    frames in order. A mix of the two is refused rather than half matched by position.
    """
    if image.is_dir():
        from .sources import folder_images

        frames = folder_images(image)
        indices = [_frame_index(p) for p in flows]
        named = [p for p, k in zip(flows, indices) if k is not None]
        if not named:  # no index to go by: first flow, first frame
            if len(frames) < len(flows):
                raise InputError(f"{image}: {len(frames)} image(s) for {len(flows)} flow file(s); "
                                 "the folder needs one frame per flow (extra frames are ignored)")
            return frames[:len(flows)]
        if len(named) < len(flows):
            other = next(p for p, k in zip(flows, indices) if k is None)
            raise InputError(f"{other}: not named by a frame index like {named[0].name}; with --image FOLDER "
                             "the flows must all be named by frame index or none of them")
        for p, k in zip(flows, indices):
            if k >= len(frames):
                raise InputError(f"{p}: no frame {k} in {image} (it has {len(frames)} images, "
                                 f"frames 0-{len(frames) - 1})")
        return [frames[k] for k in indices]
    if not image.exists():
        raise InputError(f"{image}: no such image or folder")
    return [image] * len(flows)


def _check_parent_folders(path: Path) -> None:
    """Refuse an output below an existing file (``-o afile/x.png``) before writing anything.

    Creating the folders would fail with a bare "afile: File exists", which does not say what is wrong.
    """
    for parent in path.parents:
        if parent.exists():  # False below a file (ENOTDIR), so the first existing one is the culprit
            if not parent.is_dir():
                raise InputError(f"{parent}: is not a folder, so {path} cannot be written there")
            return


@contextlib.contextmanager
def _remove_new_folders_on_error(path: Path):
    """On error, remove the (still empty) folders above ``path`` that this run created."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        yield
    except BaseException:
        for d in missing:  # deepest first; rmdir fails (and is skipped) if not empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _write_pngs(targets: list[Path], overwrite: bool, images: Iterable) -> Iterable[int]:
    """Encode ``(i, rgb)`` pairs as PNGs ``targets[i]``, all or nothing.

    Each PNG goes to a temp file beside its target; the renames happen only after
    every image was written, so a failure half way leaves no new (or replaced) file.
    Yields each index once its temp file is written.
    """
    import cv2

    from .atomic import atomic_path

    with contextlib.ExitStack() as stack:
        for i, img in images:
            ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if not ok:
                raise FlowcliError(f"{targets[i]}: could not encode the PNG")
            tmp = stack.enter_context(atomic_path(targets[i], overwrite))
            try:
                with open(tmp, "wb") as fh:
                    fh.write(buf.tobytes())
            except OSError as exc:  # a full disk names no file; name the PNG
                if exc.filename is None and exc.errno is not None:
                    raise OSError(exc.errno, exc.strerror or str(exc), str(targets[i])) from exc
                raise
            yield i


def _write_video(out: Path, fps: float, overwrite: bool, images: Iterable) -> str:
    """Stream RGB images into an mp4 (atomic); later frames are resized to the first one's size."""
    import cv2

    from .video_out import Mp4Writer

    size = None
    with Mp4Writer(out, fps=fps, overwrite=overwrite) as writer:
        for img in images:
            if size is None:
                size = (img.shape[1], img.shape[0])
            elif (img.shape[1], img.shape[0]) != size:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            writer.write(img)
    return writer.codec


def _plan_png_outputs(inputs: list[Path], out: Path) -> list[Path]:
    if len(inputs) == 1 and out.suffix.lower() == ".png" and not out.is_dir():
        return [out]
    if out.suffix.lower() == ".png" and not out.is_dir():
        raise click.UsageError(f"OUT {out} ends with .png but there are {len(inputs)} inputs; "
                               "give a folder for several PNGs")
    if out.suffix.lower() == ".mp4":
        raise click.UsageError(f"OUT {out} ends with .mp4: add --video to write a video")
    if out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
        raise click.UsageError(f"OUT {out}: viz writes PNG images; name the file .png or give a folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    targets = [out / (p.stem + ".png") for p in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, targets):
        if dst in seen:
            raise InputError(f"{seen[dst]} and {src} would both be written to {dst} "
                             "(same file name; select one format with a quoted glob such as "
                             "'DIR/*.flo', or render them into different folders)")
        seen[dst] = src
    return targets


@click.command("viz", epilog="""\b
Examples:
  flowcli viz frame_0001.flo -o frame_0001.png
  flowcli viz flows/ -o viz/                       one PNG per flow file
  flowcli viz 'flows/*.flo' -o viz/ --normalize sequence --legend
  flowcli viz flows/ -o flows.mp4 --video --fps 25 --normalize sequence
  flowcli viz 000045_10.png -o out/ --image 000045_10_rgb.png --side-by-side --arrows
  flowcli viz flows/ -o viz/ --image frames/ --arrows   000012.flo over frame 12

\b
Colours: Middlebury colour wheel (hue = direction, saturation = speed, white =
no motion, black = unknown). Normalisation: "frame" scales each flow by its own
largest vector; "sequence" by the largest vector over all inputs (no flicker in
videos; reads the inputs twice); "fixed" by --max-flow pixels (longer vectors
are darkened).""")
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              metavar="OUT",
              help="Output folder (one PNG per input, named after it), a .png file (one "
                   "input only) or, with --video, an .mp4 file.")
@click.option("--max-flow", type=FiniteFloatRange(min=0, min_open=True), metavar="PIXELS",
              help="Fixed normalisation: vectors this long (in pixels) get full saturation.")
@click.option("--normalize", type=click.Choice(["frame", "sequence", "fixed"]),
              help="Colour scale: per frame (default), one for the whole sequence, or fixed "
                   "(--max-flow; implied by it).")
@click.option("--image", type=click.Path(path_type=Path), metavar="PATH",
              help="Source frame for --arrows / --side-by-side: an image file (used for every "
                   "flow) or a folder of frames. Flow N.flo (named by its first frame, as `flowcli "
                   "estimate` writes them, e.g. 000012.flo) goes with the folder's frame N: its N-th "
                   "image from 0, in natural order, as estimate numbers a folder. Flows with other "
                   "names go with the frames in order (first flow, first image).")
@click.option("--arrows", is_flag=True,
              help="Draw flow arrows (over --image if given, else over the colour image).")
@click.option("--arrow-step", type=click.IntRange(min=2), default=16, show_default=True,
              metavar="PIXELS", help="Spacing of the arrow grid.")
@click.option("--arrow-scale", type=FiniteFloatRange(min=0, min_open=True), metavar="FACTOR",
              help="Arrow length = FACTOR x flow (1 = true displacement). Default: the "
                   "longest vector spans one grid step.")
@click.option("--legend", is_flag=True, help="Add a colour-wheel legend in the top-right corner.")
@click.option("--side-by-side", is_flag=True,
              help="Source frame (needs --image) on the left, flow colours on the right.")
@click.option("--video", is_flag=True, help="Write all frames to one H.264 .mp4 file OUT.")
@click.option("--fps", type=FiniteFloatRange(MIN_FPS, MAX_FPS), default=10.0,
              show_default=True, help="Frame rate of --video.")
@overwrite_option(help_text="Replace existing output files (refused by default). Only the files this "
                             "run writes are replaced; other files in OUT are left as they are.")
@quiet_option
@json_option
def viz(flows: tuple[str, ...], out: Path, max_flow: float | None, normalize: str | None,
        image: Path | None, arrows: bool, arrow_step: int, arrow_scale: float | None,
        legend: bool, side_by_side: bool, video: bool, fps: float, overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Render flow files as colour images (PNG) or as a video (MP4).

    FLOW is a flow file (.flo, KITTI .png, .npy, .pfm), a folder (all its flow
    files, in natural order) or a quoted glob pattern such as 'flows/*.flo'.
    Existing outputs are refused unless --overwrite; outputs appear only when
    complete.
    """
    from .atomic import check_writable
    from .flowio import FLOW_EXTENSIONS, read_flow
    from .viz import SequenceScale, max_magnitude, render

    # -- options ---------------------------------------------------------------
    if normalize is None:
        normalize = "fixed" if max_flow is not None else "frame"
    if normalize == "fixed" and max_flow is None:
        raise click.UsageError("--normalize fixed needs --max-flow PIXELS")
    if normalize != "fixed" and max_flow is not None:
        raise click.UsageError(f"--max-flow sets a fixed scale; it cannot be used with "
                               f"--normalize {normalize}")
    if side_by_side and image is None:
        raise click.UsageError("--side-by-side needs --image (the source frame)")
    if image is not None and not (arrows or side_by_side):
        raise click.UsageError("--image is only used with --arrows or --side-by-side")
    if video and out.suffix.lower() != ".mp4":
        raise click.UsageError(f"with --video, OUT must be an .mp4 file (got {out})")

    # -- inputs and outputs, all checked before anything is written -----------
    inputs = expand_inputs(flows, FLOW_EXTENSIONS, what="flow")
    if video:
        _check_parent_folders(out)
        check_writable(out, overwrite)
        targets: list[Path] = []
    else:
        targets = _plan_png_outputs(inputs, out)
        _check_parent_folders(targets[0])  # all targets are in one folder
        for t in targets:
            check_writable(t, overwrite)
        input_set = {p.resolve() for p in inputs}
        for t in targets:
            if t.resolve() in input_set:
                raise InputError(f"{t}: is one of the inputs; choose another output")
    frames = _image_list(image, inputs) if image is not None else None

    # -- pass 1 (sequence normalisation) --------------------------------------
    scale_value = max_flow
    if normalize == "sequence":
        scale = SequenceScale()
        for p in progress(inputs, desc="scanning", unit="flow", quiet=quiet):
            scale.update(read_flow(p))
        scale_value = scale.max_flow

    # -- pass 2 (render) ------------------------------------------------------
    records: list[dict[str, Any]] = []

    def rendered():
        for i, p in enumerate(progress(inputs, desc="rendering", unit="flow", quiet=quiet)):
            flow = read_flow(p)
            src = _read_image(frames[i]) if frames is not None else None
            img = render(flow, max_flow=scale_value, source=src, arrows=arrows, legend=legend,
                         side_by_side=side_by_side, arrow_step=arrow_step, arrow_scale=arrow_scale)
            rec = {"input": str(p), "width": int(flow.shape[1]), "height": int(flow.shape[0]),
                   "max_magnitude": round(max_magnitude(flow), 4)}
            if frames is not None:
                rec["image"] = str(frames[i])
            records.append(rec)
            yield i, img

    if video:
        with _remove_new_folders_on_error(out):
            codec = _write_video(out, fps, overwrite, (img for _, img in rendered()))
        summary = {"command": "viz", "video": str(out), "codec": codec, "fps": fps,
                   "frames": len(records), "normalize": normalize, "max_flow": scale_value,
                   "inputs": records}
        human = f"wrote {out} ({len(records)} frames, {codec})"
    else:
        with _remove_new_folders_on_error(targets[0]):
            for i in _write_pngs(targets, overwrite, rendered()):
                records[i]["output"] = str(targets[i])
        summary = {"command": "viz", "outputs": [str(t) for t in targets], "count": len(targets),
                   "normalize": normalize, "max_flow": scale_value, "inputs": records}
        where = targets[0] if len(targets) == 1 else f"{out}{os.sep}"
        human = f"wrote {len(targets)} PNG{'s' if len(targets) != 1 else ''} to {where}"

    if as_json:
        emit_json(summary)
    else:
        status(human, quiet)

