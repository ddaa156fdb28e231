"""The ``flowcli`` command line.

Exit codes (``EXIT_*`` below; the README cites them):

====  ================================================================
0     success
1     failure: bad or missing input, refused overwrite, unreadable
      weights, disk full or other OS error, any unexpected error
2     usage error: unknown option, bad option value, conflicting
      options (reported by click, with a usage line)
130   interrupted (Ctrl-C)
143   stopped by SIGTERM (cleaned up like Ctrl-C; rerun to resume)
====  ================================================================

On failure flowcli prints exactly one line on stderr, ``flowcli: error:
<message>``, and no traceback unless ``--debug`` (or ``FLOWCLI_DEBUG=1``) is
given. Normal output: files; ``--json`` puts a machine-readable summary on
stdout; progress bars and status lines go to stderr.

Adding a command
    Write it in its own module as a plain click command, using the shared
    helpers from this module (``quiet_option``, ``json_option``,
    ``overwrite_option``, ``progress``, ``emit_json``, ``status``,
    ``expand_inputs``; ``FiniteFloatRange`` as the type of float options),
    raise :class:`flowcli.errors.FlowcliError` subclasses for
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
import errno
import glob
import importlib
import json
import math
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import click

from .jsonutil import nan_to_none
from . import __version__
from .errors import FlowcliError, InputError, Terminated

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "failure (bad input, refused overwrite, OS error, unexpected error)",
    EXIT_USAGE: "usage error (bad options or arguments)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_TERMINATED: "stopped by SIGTERM",
}

#: Commands defined in other modules: name -> "module:attribute" (imported on use).
LAZY_COMMANDS: dict[str, str] = {
    "viz": "flowcli.cmd_viz:viz",
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
                        help="No progress bars or status messages on stderr (warnings about the input, "
                             "such as damaged video frames, still print).")(f)


def json_option(f: Callable) -> Callable:
    """``--json``: machine-readable summary on stdout (parameter ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print a machine-readable JSON summary on stdout.")(f)


OVERWRITE_HELP = ("Replace existing output files (refused by default). Once the run has finished, "
                  "outputs of the folder's earlier run that it did not rewrite are removed.")


def overwrite_option(f: Callable | None = None, *, help_text: str = OVERWRITE_HELP) -> Callable:
    """``--overwrite``: allow replacing existing outputs (parameter ``overwrite``).

    Bare (``@overwrite_option``) it promises the clean-up of an earlier run's leftovers that
    estimate and predict-next do; a command that does not clean up says what it does instead:
    ``@overwrite_option(help_text=...)``.
    """
    option = click.option("--overwrite", is_flag=True, help=help_text)
    return option if f is None else option(f)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinity (usage error, exit 2).

    click's FloatRange lets ``nan`` through any bounds (every comparison with NaN is false) and ``inf``
    through a missing upper bound. Use this for every float option where a non-finite value makes no sense
    (all of flowcli's): ``type=FiniteFloatRange(0, None, min_open=True)``; bounds as in FloatRange.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


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
    output is strict JSON. A closed stdout (``>&-``; Python then has no sys.stdout and click would
    drop the line) is an error: a script asked for the summary and would otherwise get nothing, exit 0.
    """
    if sys.stdout is None:
        raise OSError(errno.EBADF, "stdout is closed; the --json summary cannot be written")
    click.echo(json.dumps(nan_to_none(obj), default=_json_default, allow_nan=False))


def plural(count: int, noun: str) -> str:
    """'1 pair', '2 pairs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def removed_message(count: int) -> str:
    """The status line after an --overwrite run's clean-up (flowcli.replaced)."""
    return f"removed {plural(count, 'output')} of the replaced run that this run did not rewrite"


def status(message: str, quiet: bool = False) -> None:
    """A human status line on stderr (suppressed by ``--quiet``)."""
    if not quiet:
        click.echo(f"flowcli: {message}", err=True)


def warn(message: str) -> None:
    """A warning about the data (damaged frames ...) on stderr: printed even with ``--quiet``, which
    silences progress and status, because a script needs to hear that its results may be off."""
    click.echo(f"flowcli: warning: {message}", err=True)


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
    ``extensions``, not hidden ones, not recursive, natural order) or a glob pattern the shell did
    not expand (``*``, ``?``, ``[...]``, ``**``; matches with one of
    ``extensions``, natural order). Raises InputError for a missing path, an empty
    folder or a pattern matching nothing. Order of specs is kept.
    """
    exts = tuple(e.lower() for e in extensions)
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted((p for p in path.iterdir()  # not hidden files (a killed run's temp files)
                            if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")),
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


# torch's CPU allocator reports a failed allocation as a RuntimeError, not a MemoryError
_TORCH_OOM = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} bytes"  # pragma: no cover


def _out_of_memory(exc: BaseException) -> str | None:
    """The one-line message for a failed memory allocation (Python, NumPy or torch), else None."""
    if isinstance(exc, MemoryError):
        detail = _one_line(exc)  # NumPy: "Unable to allocate 27.9 TiB for an array with shape ..."
    elif isinstance(exc, RuntimeError) and (match := _TORCH_OOM.search(str(exc))):
        detail = f"could not allocate {_human_bytes(int(match.group(1)))}"
    else:
        return None
    return "out of memory" + (f" ({detail})" if detail else "") + \
        "; use smaller inputs or settings, or free memory"


def _describe(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception reaching the top.

    A failed memory allocation (MemoryError, or torch's allocator error) is "out of memory ...", exit 1,
    not an internal error: the input or the settings were too large for this machine.
    """
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", signal.SIGINT)
        return ("interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}",
                128 + int(signum))
    if isinstance(exc, FlowcliError):
        return _one_line(exc) or type(exc).__name__, int(getattr(exc, "exit_code", EXIT_FAILURE))
    if isinstance(exc, OSError):
        if exc.strerror:
            where = exc.filename if exc.filename is not None else None
            msg = f"{where}: {exc.strerror}" if where is not None else exc.strerror
        else:
            msg = str(exc) or type(exc).__name__
        return _one_line(msg), EXIT_FAILURE
    oom = _out_of_memory(exc)
    if oom is not None:
        return oom, EXIT_FAILURE
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
2 usage error, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM.
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


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the clean-up that follows is bounded
    raise Terminated(signum)


def _sigterm_as_interrupt() -> None:
    """SIGTERM (``kill``, a batch scheduler's stop) ends a command like Ctrl-C does: partial temp files
    are removed and the resume state stays valid; exit code 143. Left alone if SIGTERM is not at its
    default (a parent chose to ignore or handle it) or outside the main thread."""
    import threading
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code (see ``EXIT_CODES``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:] and "--" not in args:  # accept `flowcli estimate ... --debug` too
        args.remove("--debug")
        args.insert(0, "--debug")
    _sigterm_as_interrupt()
    try:
        cli.main(args=args, prog_name="flowcli")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return EXIT_OK
        return code if isinstance(code, int) else EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
