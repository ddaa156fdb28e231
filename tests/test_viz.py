"""flowcli.viz (colour wheel, normalisation, legend, arrows, panels) and flowcli.video_out."""
from __future__ import annotations

import warnings

import av
import flow_vis
import numpy as np
import pytest

from flowcli import viz
from flowcli.errors import OutputExistsError
from flowcli.video_out import Mp4Writer, default_codec


def _rand_flow(seed: int, scale: float, h: int = 48, w: int = 64, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((h, w, 2)) * scale).astype(dtype)


def _maxdiff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == np.uint8
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# ------------------------------------------------------------------ colour wheel

def test_colorwheel_is_middlebury():
    assert np.array_equal(viz.make_colorwheel(), flow_vis.make_colorwheel())
    assert viz.make_colorwheel().shape == (55, 3)


@pytest.mark.parametrize("scale", [0.01, 1.0, 12.0, 300.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flow_to_color_matches_flow_vis(scale, dtype):
    flow = _rand_flow(int(scale * 100), scale, dtype=dtype)
    ours = viz.flow_to_color(flow)
    ref = flow_vis.flow_to_color(flow, convert_to_bgr=False)
    assert ours.dtype == np.uint8 and ours.shape == (48, 64, 3)
    assert _maxdiff(ours, ref) <= 1


@pytest.mark.parametrize("max_flow", [0.5, 3.0, 50.0])
def test_fixed_max_flow_matches_flow_vis_normalised(max_flow):
    flow = _rand_flow(7, 3.0)  # with max_flow 0.5 most vectors are out of range
    ours = viz.flow_to_color(flow, max_flow=max_flow)
    f64 = flow.astype(np.float64)
    ref = flow_vis.flow_uv_to_colors(f64[..., 0] / max_flow, f64[..., 1] / max_flow)
    assert _maxdiff(ours, ref) <= 1


def test_zero_flow_is_white():
    img = viz.flow_to_color(np.zeros((5, 6, 2), np.float32))
    assert (img == 255).all()
    assert np.array_equal(img, flow_vis.flow_to_color(np.zeros((5, 6, 2))))


def test_unknown_pixels_black_and_not_normalised():
    flow = _rand_flow(3, 5.0)
    bad = flow.copy()
    mask = np.zeros(flow.shape[:2], bool)
    mask[0, :5] = True
    mask[10:12, 20:30] = True
    bad[0, 0] = (np.nan, 1.0)
    bad[0, 1] = (1.0, np.nan)
    bad[0, 2] = (1e10, 0.0)      # Middlebury unknown
    bad[0, 3] = (0.0, -2e9)
    bad[0, 4] = (np.inf, 0.0)
    bad[10:12, 20:30] = np.nan
    clean = flow.copy()
    clean[mask] = 0.0            # zero vectors do not change the maximum
    ours = viz.flow_to_color(bad)
    assert (ours[mask] == 0).all()
    ref = flow_vis.flow_to_color(clean)
    assert _maxdiff(ours[~mask], ref[~mask]) <= 1
    assert viz.max_magnitude(bad) == pytest.approx(viz.max_magnitude(clean))
    assert viz.unknown_mask(bad).sum() == mask.sum()


@pytest.mark.parametrize("fill", [np.nan, 1e10, -np.inf])
def test_all_unknown_is_black_without_warnings(fill):
    flow = np.full((7, 9, 2), fill, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = viz.flow_to_color(flow)
        assert viz.max_magnitude(flow) == 0.0
        assert (img == 0).all() and img.shape == (7, 9, 3)
        assert (viz.flow_to_color(flow, max_flow=4.0) == 0).all()
        assert (viz.render(flow, legend=True, arrows=True)[-1] == 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        viz.flow_to_color(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        viz.flow_to_color(np.zeros((4, 4)))
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            viz.flow_to_color(np.zeros((4, 4, 2)), max_flow=bad)


# ------------------------------------------------------------------ normalisation

def test_max_magnitude():
    flow = np.zeros((4, 4, 2), np.float32)
    flow[1, 2] = (3, 4)
    flow[0, 0] = (1e10, 1e10)
    flow[3, 3] = np.nan
    assert viz.max_magnitude(flow) == pytest.approx(5.0)


def test_sequence_scale():
    small = _rand_flow(1, 1.0)
    big = _rand_flow(2, 10.0)
    scale = viz.SequenceScale()
    assert scale.update(small) == pytest.approx(viz.max_magnitude(small))
    scale.update(big)
    assert scale.count == 2
    assert scale.max_magnitude == pytest.approx(max(viz.max_magnitude(small), viz.max_magnitude(big)))
    assert scale.max_flow == pytest.approx(scale.max_magnitude + 1e-5)
    # the big frame looks as per-frame; the small one is paler (closer to white)
    assert _maxdiff(viz.flow_to_color(big, max_flow=scale.max_flow), viz.flow_to_color(big)) <= 1
    pale = viz.flow_to_color(small, max_flow=scale.max_flow).astype(float).mean()
    assert pale > viz.flow_to_color(small).astype(float).mean() + 20
    # one-frame sequence == per-frame normalisation (flow_vis's epsilon included)
    one = viz.SequenceScale().update_many([small])
    assert np.array_equal(viz.flow_to_color(small, max_flow=one.max_flow), viz.flow_to_color(small))
    # an empty / all-unknown sequence still gives a usable (positive) scale
    empty = viz.SequenceScale().update_many([np.full((3, 3, 2), np.nan)])
    assert empty.max_flow > 0


# ------------------------------------------------------------------ legend, arrows, panels

def test_colorwheel_legend():
    leg = viz.colorwheel_legend(64)
    assert leg.shape == (64, 64, 3) and leg.dtype == np.uint8
    assert (leg[32, 32] >= 240).all()                   # centre: no motion = white
    right = viz.flow_to_color(np.array([[[1.0, 0.0]]]), max_flow=1.0)[0, 0]
    assert np.abs(leg[32, 58].astype(int) - right).max() < 40   # +x is the colour of (1, 0)
    assert (leg[0, 0] == 255).all()                     # outside the disc
    with pytest.raises(ValueError):
        viz.colorwheel_legend(4)


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_paste_legend(corner):
    img = np.zeros((120, 200, 3), np.uint8)
    out = viz.paste_legend(img, corner=corner, size=32)
    assert out.shape == img.shape and (img == 0).all()   # input untouched
    h, w = 120, 200
    ys = slice(0, h // 2) if corner.startswith("top") else slice(h // 2, h)
    xs = slice(0, w // 2) if corner.endswith("left") else slice(w // 2, w)
    quadrant = np.zeros((h, w), bool)
    quadrant[ys, xs] = True
    changed = (out != 0).any(axis=2)
    assert changed.sum() > 500 and not changed[~quadrant].any()
    tiny = np.zeros((10, 10, 3), np.uint8)
    assert np.array_equal(viz.paste_legend(tiny), tiny)


def test_draw_arrows():
    img = np.full((64, 96, 3), 100, np.uint8)
    flow = np.zeros((64, 96, 2), np.float32)
    flow[..., 0] = 6.0
    out = viz.draw_arrows(img, flow, step=16)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 100).all()                            # copy, not in place
    assert (out != 100).any(axis=2).sum() > 50
    fixed = viz.draw_arrows(img, flow, step=16, color=(255, 0, 0))
    assert ((fixed == (255, 0, 0)).all(axis=2)).sum() > 20
    # unknown or zero vectors get no arrow
    assert np.array_equal(viz.draw_arrows(img, np.full_like(flow, np.nan)), img)
    assert np.array_equal(viz.draw_arrows(img, np.zeros_like(flow)), img)
    # scale=None: the longest vector spans one grid step, whatever its length
    far = np.zeros((64, 96, 2), np.float32)
    far[..., 0] = 500.0
    auto = viz.draw_arrows(img, far, step=16, scale=None, color=(255, 0, 0))
    cols = np.nonzero(((auto == (255, 0, 0)).all(axis=2)).any(axis=0))[0]
    assert cols.min() >= 7 and cols.max() <= 96 - 8 + 17
    short = np.zeros((64, 96, 2), np.float32)
    short[..., 1] = 2.0                                  # below min_length (3 px) at scale 1
    assert np.array_equal(viz.draw_arrows(img, short), img)
    assert not np.array_equal(viz.draw_arrows(img, short, scale=None), img)
    grey = viz.draw_arrows(img[..., 0], flow)            # greyscale source accepted
    assert grey.shape == (64, 96, 3)
    with pytest.raises(ValueError):
        viz.draw_arrows(img[:32], flow)


def test_arrows_ending_far_outside_int32_are_cut_not_a_crash():
    """scale * flow beyond int32 (--arrow-scale 1e20, --max-flow 1e-9) used to crash cv2.arrowedLine."""
    img = np.full((48, 64, 3), 100, np.uint8)
    flow = np.full((48, 64, 2), 5.0, np.float32)
    # an arrow 198 px long already runs off the image: the cut one draws exactly the same picture
    seen = viz.draw_arrows(img, flow, scale=28.0)
    assert (seen != 100).any(axis=2).sum() > 100
    for scale in (1e20, 1e308, float("inf")):
        assert np.array_equal(viz.draw_arrows(img, flow, scale=scale), seen)
    red = viz.draw_arrows(img, flow, scale=28.0, color=(255, 0, 0))
    assert np.array_equal(viz.draw_arrows(img, -flow, scale=-1e20, color=(255, 0, 0)), red)  # sign kept
    up = flow.copy()
    up[..., 0] = 0.0
    up[..., 1] = -5.0
    assert not np.array_equal(viz.draw_arrows(img, up, scale=1e20), seen)  # direction kept
    # scale=None with a tiny (even subnormal) max_flow: scale 16 / 5e-324 is inf
    for max_flow in (1e-9, 5e-324):
        assert viz.draw_arrows(img, flow, scale=None, max_flow=max_flow).shape == img.shape
        assert viz.render(flow, max_flow=max_flow, arrows=True).shape == img.shape
    huge = np.full((48, 64, 2), 1e9, np.float32)     # largest known value, times a huge scale
    assert (viz.draw_arrows(img, huge, scale=1e300) != 100).any()


def test_tiny_max_flow_keeps_directions_without_warnings():
    """max_flow=1e-300 overflowed u / max_flow to inf: RuntimeWarnings on stderr, and (u, v) = (inf, inf)
    lost the direction. Every vector is out of range, so the picture is the one for max_flow=1e-6."""
    flow = _rand_flow(11, 20.0, h=6, w=8)
    flow[0, 0] = (1e9, 5e8)
    flow[0, 1] = (-7e8, 3e8)
    flow[0, 2] = (0.0, 0.0)                           # white whatever the radius
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny = viz.flow_to_color(flow, max_flow=1e-300)
    assert np.array_equal(tiny, viz.flow_to_color(flow, max_flow=1e-6))
    assert (tiny[0, 2] == 255).all()


def test_side_by_side():
    a = np.zeros((40, 30, 3), np.uint8)
    b = np.full((40, 50, 3), 255, np.uint8)
    assert viz.side_by_side(a, b).shape == (40, 80, 3)
    c = np.full((80, 50, 3), 255, np.uint8)             # taller: resized to 40 high
    out = viz.side_by_side(a, c)
    assert out.shape == (40, 30 + 25, 3)
    assert (out[:, :30] == 0).all() and (out[:, 30:] == 255).all()


def test_render_combinations():
    flow = _rand_flow(5, 4.0, h=60, w=80)
    src = np.full((60, 80, 3), 128, np.uint8)
    assert np.array_equal(viz.render(flow), viz.flow_to_color(flow))
    assert np.array_equal(viz.render(flow, max_flow=2.0), viz.flow_to_color(flow, max_flow=2.0))
    assert viz.render(flow, legend=True).shape == (60, 80, 3)
    assert viz.render(flow, arrows=True).shape == (60, 80, 3)
    over = viz.render(flow, source=src, arrows=True)
    assert over.shape == (60, 80, 3) and (over == 128).all(axis=2).mean() > 0.3
    sbs = viz.render(flow, source=src, side_by_side=True, arrows=True, legend=True)
    assert sbs.shape == (60, 160, 3)
    assert np.array_equal(viz.render(flow, source=src, side_by_side=True)[:, 80:],
                          viz.flow_to_color(flow))
    big_src = np.full((120, 160, 3), 128, np.uint8)     # source resized to the flow
    assert viz.render(flow, source=big_src, side_by_side=True).shape == (60, 160, 3)
    with pytest.raises(ValueError):
        viz.render(flow, side_by_side=True)


# ------------------------------------------------------------------ Mp4Writer

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (40, 40, 40)]


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.codec_context.name, frames


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_mp4_writer_roundtrip(tmp_path, codec):
    out = tmp_path / "v.mp4"
    with Mp4Writer(out, fps=10, codec=codec) as video:
        assert not out.exists()                          # only appears on close
        for i in range(10):
            frame = np.empty((33, 47, 3), np.uint8)      # odd size -> padded to 48x34
            frame[:] = COLOURS[i % len(COLOURS)]
            video.write(frame)
    assert out.exists() and video.frames_written == 10
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    name, frames = _decode(out)
    assert name == ("h264" if (codec or default_codec()) == "libx264" else "mpeg4")
    assert len(frames) == 10
    assert frames[0].shape == (34, 48, 3)
    for i, f in enumerate(frames):
        centre = f[8:26, 8:40].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - COLOURS[i % len(COLOURS)]).max() < 12, (i, centre)
    # the padded row/column repeats the edge colour
    assert np.abs(frames[0][33, :40].astype(int) - COLOURS[0]).max() < 20

    import imageio.v3 as iio

    assert iio.imread(out, plugin="pyav").shape == (10, 34, 48, 3)


def test_mp4_writer_exception_leaves_nothing(tmp_path):
    out = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Writer(out, fps=5) as video:
            video.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="all frames"):
        with Mp4Writer(out, fps=5) as video:
            video.write(np.zeros((16, 16, 3), np.uint8))
            video.write(np.zeros((16, 18, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no frames"):
        Mp4Writer(out, fps=5).close()
    assert list(tmp_path.iterdir()) == []


def test_mp4_writer_overwrite(tmp_path):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        Mp4Writer(out, fps=5)
    assert out.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
    with Mp4Writer(out, fps=5, overwrite=True) as video:
        video.write(np.zeros((16, 16, 3), np.uint8))
    assert out.stat().st_size > 100 and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------------ demo clip

def test_demo_video_is_atomic_and_refuses_an_existing_file(tmp_path):
    from flowcli.synth import make_demo_video

    out = tmp_path / "sample.mp4"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        make_demo_video(out, num_frames=2, size=(32, 32), overwrite=False)
    assert out.read_bytes() == b"old"
    with pytest.raises(RuntimeError, match="could not encode"):  # fps 0: no codec can write it
        make_demo_video(out, num_frames=2, size=(32, 32), fps=0, overwrite=True)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["sample.mp4"]
    make_demo_video(out, num_frames=2, size=(32, 32), overwrite=True)
    assert out.stat().st_size > 100 and [p.name for p in tmp_path.iterdir()] == ["sample.mp4"]


def test_demo_clip_command_refuses_an_existing_file(tmp_path, capsys):
    from flowcli.synth.demo_clip import main

    out = tmp_path / "clip.mp4"
    out.write_bytes(b"old")
    with pytest.raises(SystemExit) as exc:
        main([str(out), "--frames", "2", "--size", "32x32"])
    assert "already exists" in str(exc.value.code) and out.read_bytes() == b"old"
    main([str(out), "--frames", "2", "--size", "32x32", "--overwrite"])
    assert out.stat().st_size > 100


@pytest.mark.parametrize("existing", ["sample.mp4", "flow"])
def test_demo_replaces_nothing(tmp_path, capsys, existing):
    from flowcli import demo

    if existing == "flow":
        (tmp_path / "flow").mkdir()
        (tmp_path / "flow" / "000000.flo").write_bytes(b"old flow")
    else:
        (tmp_path / "sample.mp4").write_bytes(b"old")
    assert demo.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowcli: error: ") and f"{existing}: already exists" in err[0]
    if existing == "flow":
        assert (tmp_path / "flow" / "000000.flo").read_bytes() == b"old flow"
    else:
        assert (tmp_path / "sample.mp4").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [existing]


def test_arrows_with_scale_zero_and_one_unknown_rule():
    """draw_arrows(scale=0, min_length=0) divided by zero; viz.unknown_mask had its own copy of the rule
    (with abs(), which keeps the most negative int64 negative: called known, flowio called it unknown)."""
    from flowcli import flowio
    image = np.zeros((32, 32, 3), np.uint8)
    assert np.array_equal(viz.draw_arrows(image, np.ones((32, 32, 2), np.float32), scale=0, min_length=0), image)
    flow = np.zeros((2, 2, 2), np.int64)
    flow[0, 0, 0] = np.iinfo(np.int64).min
    assert viz.unknown_mask(flow).tolist() == flowio.unknown_mask(flow).tolist() == [[True, False], [False, False]]
