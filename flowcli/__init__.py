"""flowcli: dense optical flow for videos with the MemFlow network, CPU first.

Python API (torch is imported on first use, not by ``import flowcli``)::

    import flowcli
    model = flowcli.load_model()                       # shipped weights; or a name / path
    for index, flow in flowcli.estimate_flows("clip.mp4", model):  # the weights' defaults, as the CLI
        ...                                            # flow: (H, W, 2) float32, frame index -> next

    flowcli.read_flow("000000.flo"); flowcli.write_flow("x.flo", flow)
    flowcli.flow_to_color(flow)                        # (H, W, 3) uint8 RGB, Middlebury colour wheel
"""

import itertools
import os

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "estimate_flows", "read_flow", "write_flow", "flow_to_color"]


# What estimate_flows uses for a model that does not carry its weights' defaults (e.g. built by hand).
_BARE_DEFAULTS = {"iters": 12, "coarse": False, "refine": False, "tta": False}


def load_model(weights: str | None = None, preset: str | None = None, device: str = "cpu",
               kind: str = "estimate"):
    """A ready MemFlowNet: ``weights`` is None (shipped default), a shipped or official name,
    or a path (official ``.pth`` with ``preset``, or a flowcli ``.safetensors``).
    ``kind="predict"``: a MemFlow-P model (for :class:`flowcli.predict.PredictStream`) instead.

    The model carries its weights' inference defaults (``model.flowcli_defaults``: ``iters``,
    ``coarse`` (coarse-to-fine), ``refine``), which :func:`estimate_flows` uses unless told otherwise.
    """
    from .weights import load_weights
    loaded = load_weights(weights, preset=preset, device=device, kind=kind)
    loaded.model.flowcli_defaults = loaded.inference_settings()
    return loaded.model


def estimate_flows(source, model=None, *, iters: int | None = None, warm_start: bool = False,
                   precision: str = "fp32", max_side: int | None = None, start: int = 0, end: int | None = None,
                   step: int = 1, device: str = "cpu", coarse_to_fine: bool | None = None,
                   refine: bool | None = None):
    """Yield ``(index, flow)`` for consecutive frames of ``source``.

    ``source``: a video path, an image folder, or any iterable of (H, W, 3) uint8 RGB
    arrays. ``index`` is the first frame of the pair; ``flow`` is (H, W, 2) float32.
    ``start``/``end``/``step`` select frames (``end`` exclusive) of any source, as the CLI's options.
    Frames are streamed; the memory is carried across the whole source.
    ``model``: None (the shipped weights) or one from :func:`load_model`.
    ``iters``; ``coarse_to_fine`` (start from a half-size pass where motion is large, see
    ``flowcli.coarse``); ``refine`` (finish each flow with a variational pass, see ``flowcli.refine``):
    None means the weights' own defaults, as in the CLI (the shipped weights: 8, on, on; official
    checkpoints: their preset's iterations, off, off); a model built by hand: 12, off, off.
    """
    from .engine import StreamOptions, iter_flows
    from .sources import Frame, check_selection, open_source
    if model is None:
        model = load_model(device=device)
    given = {"iters": iters, "coarse": coarse_to_fine, "refine": refine}
    defaults = getattr(model, "flowcli_defaults", _BARE_DEFAULTS)
    chosen = {k: defaults[k] if v is None else v for k, v in given.items()}
    options = StreamOptions(warm_start=warm_start, max_side=max_side, precision=precision, **chosen)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    if isinstance(source, str) or hasattr(source, "__fspath__"):
        with open_source(os.fspath(source), start=start, end=end, step=step) as frames:
            yield from iter_flows(model, frames, options, device)
    else:  # the same selection as for a path, by the frames' own indices (Frame-like items) or from 0
        check_selection(start, end, step)
        frames = (f if hasattr(f, "image") else Frame(i, f) for i, f in enumerate(source))
        selected = (f for f in frames if f.index >= start and (f.index - start) % step == 0)
        yield from iter_flows(model, itertools.takewhile(lambda f: end is None or f.index < end, selected),
                              options, device)


def read_flow(path):
    from .flowio import read_flow as _read
    return _read(path)


def write_flow(path, flow, overwrite: bool = False):
    from .flowio import write_flow as _write
    return _write(path, flow, overwrite=overwrite)


def flow_to_color(flow, max_flow: float | None = None):
    from .viz import flow_to_color as _color
    return _color(flow, max_flow=max_flow)
