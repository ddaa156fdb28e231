"""The ``flowcli`` command line.

Exit codes (``EXIT_*`` below; the README cites them):

====  ================================================================
0     success
1     failure: bad or missing input, refused overwrite, unreadable
      weights, disk full or other OS error, any unexpected error
2     usage error: unknown option, bad option value, conflicting
      options (reported by click, with a usage line)
130   interrupted (Ctrl-C)
====  ================================================================

On failure flowcli prints exactly one line on stderr, ``flowcli: error:
<message>``, and no traceback unless ``--debug`` (or ``FLOWCLI_DEBUG=1``) is
given. Normal output: files; ``--json`` puts a machine-readable summary on
stdout; progress bars and status lines go to stderr.

Adding a command
    Write it in its own module as a plain click command, using the shared
    helpers from this module (``quiet_option``, ``json_option``,
    ``overwrite_option``, ``progress``, ``emit_json``, ``status``,
    ``expand_inputs``), raise :class:`flowcli.errors.FlowcliError` subclasses for
    errors the user can fix, and register it with one line in
    :data:`LAZY_COMMANDS`::

        # flowcli/cmd_estimate.py
        @click.command("estimate", epilog=...)
        @quiet_option
        @json_option
        def estimate(...): ...

        # here
        LAZY_COMMANDS = {"estimate": "flowcli.cmd_estimate:estimate"}

    The module is imported only when that command runs (or for ``--help``), so
    a torch-heavy command does not slow down the others. Error handling, exit
    codes and ``--debug`` apply to every command automatically.
"""
from __future__ import annotations

import contextlib
import glob
import importlib
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click

from .jsonutil import nan_to_none
from . import __version__
from .errors import FlowcliError, InputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "failure (bad input, refused overwrite, OS error, unexpected error)",
    EXIT_USAGE: "usage error (bad options or arguments)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

#: Commands defined in other modules: name -> "module:attribute" (imported on use).
LAZY_COMMANDS: dict[str, str] = {
    "estimate": "flowcli.cmd_estimate:estimate",
    "predict-next": "flowcli.cmd_predict:predict_next",
    "eval": "flowcli.cmd_eval:eval_cmd",
    "train": "flowcli.cmd_train:train_cmd",
    "weights": "flowcli.cmd_weights:weights_group",
    "batch": "flowcli.cmd_batch:batch",
}

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


# =========================================================================== helpers
# Shared by every command. Import them from here: ``from flowcli.cli import progress``.

def quiet_option(f: Callable) -> Callable:
    """``-q/--quiet``: no progress bars or status lines (parameter ``quiet``)."""
    return click.option("-q", "--quiet", is_flag=True,
                        help="No progress bars or status messages on stderr.")(f)


def json_option(f: Callable) -> Callable:
    """``--json``: machine-readable summary on stdout (parameter ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print a machine-readable JSON summary on stdout.")(f)


def overwrite_option(f: Callable) -> Callable:
    """``--overwrite``: allow replacing existing outputs (parameter ``overwrite``)."""
    return click.option("--overwrite", is_flag=True,
                        help="Replace existing output files (refused by default).")(f)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def emit_json(obj: Any) -> None:
    """Write ``obj`` as one JSON document (one line) on stdout.

    Paths and numpy scalars/arrays are converted; NaN/inf become ``null`` so the
    output is strict JSON.
    """
    click.echo(json.dumps(nan_to_none(obj), default=_json_default, allow_nan=False))


def status(message: str, quiet: bool = False) -> None:
    """A human status line on stderr (suppressed by ``--quiet``)."""
    if not quiet:
        click.echo(f"flowcli: {message}", err=True)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None,
             quiet: bool = False, unit: str = "it", **kwargs: Any):
    """A tqdm progress bar on stderr; disabled with ``quiet`` or when stderr is not a terminal.

    Use like tqdm: ``for x in progress(items, desc="rendering", quiet=quiet): ...``.
    """
    from tqdm import tqdm

    if total is None and iterable is not None:
        with contextlib.suppress(TypeError):
            total = len(iterable)  # type: ignore[arg-type]
    disable = quiet or not _isatty(sys.stderr)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                dynamic_ncols=True, **kwargs)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


_DIGITS = re.compile(r"(\d+)")


def natural_key(path: str | os.PathLike) -> list:
    """Sort key putting ``frame_2`` before ``frame_10`` (case-insensitive)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower())
            for tok in _DIGITS.split(os.fspath(path))]


def expand_inputs(specs: Sequence[str], extensions: Sequence[str], what: str = "input") -> list[Path]:
    """Turn command-line inputs into a list of files.

    Each spec is a file (taken as is), a folder (its files with one of
    ``extensions``, not recursive, natural order) or a glob pattern the shell did
    not expand (``*``, ``?``, ``[...]``, ``**``; matches with one of
    ``extensions``, natural order). Raises InputError for a missing path, an empty
    folder or a pattern matching nothing. Order of specs is kept.
    """
    exts = tuple(e.lower() for e in extensions)
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in exts),
                           key=natural_key)
            if not found:
                raise InputError(f"{spec}: folder has no {what} files ({', '.join(exts)})")
            out.extend(found)
        elif path.exists():
            out.append(path)
        elif glob.has_magic(spec):
            found = sorted((Path(p) for p in glob.glob(spec, recursive=True)
                            if Path(p).is_file() and Path(p).suffix.lower() in exts), key=natural_key)
            if not found:
                raise InputError(f"{spec}: no {what} files match this pattern")
            out.extend(found)
        else:
            raise InputError(f"{spec}: no such file or folder")
    return out


# =========================================================================== group

def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def _describe(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception reaching the top."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(exc, FlowcliError):
        return _one_line(exc) or type(exc).__name__, int(getattr(exc, "exit_code", EXIT_FAILURE))
    if isinstance(exc, OSError):
        if exc.strerror:
            where = exc.filename if exc.filename is not None else None
            msg = f"{where}: {exc.strerror}" if where is not None else exc.strerror
        else:
            msg = str(exc) or type(exc).__name__
        return _one_line(msg), EXIT_FAILURE
    detail = _one_line(exc)
    msg = f"internal error: {type(exc).__name__}" + (f": {detail}" if detail else "")
    return msg + " (run with --debug for the traceback)", EXIT_FAILURE


class FlowcliGroup(click.Group):
    """click group with lazily imported commands and flowcli's error policy."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and name in LAZY_COMMANDS:
            module_name, _, attr = LAZY_COMMANDS[name].partition(":")
            cmd = getattr(importlib.import_module(module_name), attr)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            raise  # click silences EPIPE (e.g. `flowcli ... --json | head`)
        except (Exception, KeyboardInterrupt) as exc:
            debug = bool(ctx.params.get("debug")) or _env_debug()
            message, code = _describe(exc)
            _close_progress_bars()
            if debug:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"flowcli: error: {message}", err=True)
            raise click.exceptions.Exit(code) from None


def _close_progress_bars() -> None:
    """End bars left open by the exception so the error starts on its own line."""
    tqdm_mod = sys.modules.get("tqdm")
    if tqdm_mod is None:
        return
    with contextlib.suppress(Exception):
        for bar in list(getattr(tqdm_mod.tqdm, "_instances", ())):
            bar.close()


def _env_debug() -> bool:
    return os.environ.get("FLOWCLI_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


@click.group(cls=FlowcliGroup, context_settings=CONTEXT_SETTINGS, epilog="""\b
Examples:
  flowcli estimate clip.mp4 -o flow/          flow/000000.flo = frame 0 -> 1, ...
  flowcli estimate frames/ -o out/ --format png --video --precision bf16
  flowcli predict-next clip.mp4 -o pred/ --weights MemFlowNet_P_sintel.pth --preset sintel
  flowcli viz flow/ -o viz/                   colour-code every flow file in flow/
  flowcli eval data/sintel --layout sintel    accuracy on a dataset with ground truth
  flowcli weights list                        shipped and official weights
  flowcli --debug viz broken.flo -o out/      any command, with a traceback on error

\b
Exit codes: 0 ok, 1 failure (one line "flowcli: error: ..." on stderr),
2 usage error, 130 interrupted (143: batch stopped by SIGTERM).
Run "flowcli COMMAND --help" for details.""")
@click.version_option(__version__, "-V", "--version", prog_name="flowcli",
                      message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True,
              help="Show the full traceback when something fails (also FLOWCLI_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Dense optical flow for videos with the MemFlow network (CPU first).

    Flow files everywhere are Middlebury .flo, KITTI 16-bit .png, NumPy .npy
    (H x W x 2) or .pfm; unknown pixels are NaN in memory and drawn black.
    """
    ctx.ensure_object(dict)["debug"] = debug


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (see ``EXIT_CODES``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:] and "--" not in args:  # accept `flowcli estimate ... --debug` too
        args.remove("--debug")
        args.insert(0, "--debug")
    try:
        cli.main(args=args, prog_name="flowcli")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_FAILURE
    return EXIT_OK


# =========================================================================== viz

def _read_image(path: Path):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        if not path.exists():
            raise InputError(f"{path}: no such image")
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _image_list(image: Path, count: int) -> list[Path]:
    """Source frames for ``count`` flows: one file for all, or a folder aligned by order."""
    if image.is_dir():
        frames = sorted((p for p in image.iterdir()
                         if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
        if len(frames) < count:
            raise InputError(f"{image}: {len(frames)} image(s) for {count} flow file(s); "
                             "the folder needs one frame per flow (extra frames are ignored)")
        return frames[:count]
    if not image.exists():
        raise InputError(f"{image}: no such image or folder")
    return [image] * count


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


@cli.command("viz", epilog="""\b
Examples:
  flowcli viz frame_0001.flo -o frame_0001.png
  flowcli viz flows/ -o viz/                       one PNG per flow file
  flowcli viz 'flows/*.flo' -o viz/ --normalize sequence --legend
  flowcli viz flows/ -o flows.mp4 --video --fps 25 --normalize sequence
  flowcli viz 000045_10.png -o out/ --image 000045_10_rgb.png --side-by-side --arrows
  flowcli viz flows/ -o viz/ --image frames/ --arrows   frame i goes with flow i

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
@click.option("--max-flow", type=click.FloatRange(min=0, min_open=True), metavar="PIXELS",
              help="Fixed normalisation: vectors this long (in pixels) get full saturation.")
@click.option("--normalize", type=click.Choice(["frame", "sequence", "fixed"]),
              help="Colour scale: per frame (default), one for the whole sequence, or fixed "
                   "(--max-flow; implied by it).")
@click.option("--image", type=click.Path(path_type=Path), metavar="PATH",
              help="Source frame for --arrows / --side-by-side: an image file (used for every "
                   "flow) or a folder of frames matched to the flows by order.")
@click.option("--arrows", is_flag=True,
              help="Draw flow arrows (over --image if given, else over the colour image).")
@click.option("--arrow-step", type=click.IntRange(min=2), default=16, show_default=True,
              metavar="PIXELS", help="Spacing of the arrow grid.")
@click.option("--arrow-scale", type=click.FloatRange(min=0, min_open=True), metavar="FACTOR",
              help="Arrow length = FACTOR x flow (1 = true displacement). Default: the "
                   "longest vector spans one grid step.")
@click.option("--legend", is_flag=True, help="Add a colour-wheel legend in the top-right corner.")
@click.option("--side-by-side", is_flag=True,
              help="Source frame (needs --image) on the left, flow colours on the right.")
@click.option("--video", is_flag=True, help="Write all frames to one H.264 .mp4 file OUT.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Frame rate of --video.")
@overwrite_option
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
        check_writable(out, overwrite)
        targets: list[Path] = []
    else:
        targets = _plan_png_outputs(inputs, out)
        for t in targets:
            check_writable(t, overwrite)
        input_set = {p.resolve() for p in inputs}
        for t in targets:
            if t.resolve() in input_set:
                raise InputError(f"{t}: is one of the inputs; choose another output")
    frames = _image_list(image, len(inputs)) if image is not None else None

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
