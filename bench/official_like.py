"""Baseline: a frame computed the way the OFFICIAL MemFlow inference code computes it.

Mimics ``inference/inference_core_skflow.py`` + ``memory_manager_skflow.py`` of
github.com/DQiaole/MemFlow (commit c7fe6da), as described in
``/work/shared/docs/memflow-reference.md`` (sections 1, 4, 5 and 7):

* per pair (ti, ti+1): the context encoder on frame ti, and the feature encoder on
  BOTH frames as a batch of 2, so every frame goes through the feature encoder twice;
* the all-pairs correlation pyramid (matmul / sqrt(D), avg-pool x3, grid_sample lookup
  with the RAFT meshgrid(dy, dx) offsets) is rebuilt for every pair;
* memory read every iteration as an explicit ``einsum`` similarity, a hand-written
  softmax (max, exp, sum, divide: the full keys x queries affinity matrix is
  materialised several times) plus the per-key usage sum, then ``values @ affinity``;
  all float32; memory keys/values are concatenated with the current frame's every
  iteration; eviction keeps one past frame (max/min mid-term frames 2/1);
* NCHW float32 everywhere, the upsampling mask head run at every iteration, convex
  upsampling once at the end, no warm start.

It is built from a flowcli :class:`~flowcli.model.MemFlowNet`: its config, its weights
(by their official state_dict names, copied to contiguous NCHW float32), and
``flowcli.model.InputPadder`` / ``coords_grid``. Every operation with a cost is written
out here explicitly in the official form, so that optimisations of flowcli's model
internals (fused or skipped ops, layouts, dtypes) cannot leak into the baseline.
Its flows equal :class:`flowcli.engine.FlowStream`'s (float32, no warm start) to ~1e-4 px.

One deliberate difference, cost-neutral: a correlation level whose side would reach 1
or 0 px (padded input side < 128 px, where the official code returns NaN, reference
section 7.1) is handled as flowcli does, so the baseline runs at every size flowcli runs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from flowcli.model import InputPadder, MemFlowNet, coords_grid


# -- layers, from the weights dict ------------------------------------------------------------------------
class _Weights:
    def __init__(self, model: MemFlowNet):
        self.sd = {k: v.detach().to(torch.float32).contiguous().clone()
                   for k, v in model.state_dict().items() if v.is_floating_point()}

    def has(self, name: str) -> bool:
        return f"{name}.weight" in self.sd

    def conv(self, name: str, x: torch.Tensor, stride: int = 1, groups: int = 1) -> torch.Tensor:
        w = self.sd[f"{name}.weight"]
        k = w.shape[-1]
        return F.conv2d(x, w, self.sd.get(f"{name}.bias"), stride=stride, padding=k // 2, groups=groups)

    def norm(self, name: str, x: torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "instance":  # fnet: InstanceNorm2d(affine=False)
            return F.instance_norm(x, eps=1e-5)
        sd = self.sd
        return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                            sd[f"{name}.bias"], training=False, eps=1e-5)

    # RAFT BasicEncoder (official core/Networks/encoders.py, basicencoder)
    def residual(self, name: str, x: torch.Tensor, kind: str, stride: int) -> torch.Tensor:
        y = F.relu(self.norm(f"{name}.norm1", self.conv(f"{name}.conv1", x, stride), kind))
        y = F.relu(self.norm(f"{name}.norm2", self.conv(f"{name}.conv2", y), kind))
        if stride != 1:
            x = self.norm(f"{name}.norm3", self.conv(f"{name}.downsample.0", x, stride), kind)
        return F.relu(x + y)

    def encoder(self, name: str, x: torch.Tensor, kind: str) -> torch.Tensor:
        x = F.relu(self.norm(f"{name}.norm1", self.conv(f"{name}.conv1", x, 2), kind))
        for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2)):
            x = self.residual(f"{name}.{layer}.0", x, kind, stride)
            x = self.residual(f"{name}.{layer}.1", x, kind, 1)
        return self.conv(f"{name}.conv2", x)

    # SKFlow PCBlock4_Deep_nopool_res (official sk2.py): 1x1 and kxk depthwise convs both run
    def pcblock(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(x + self.conv(f"{name}.ffn1.2", F.gelu(self.conv(f"{name}.ffn1.0", x))))
        i = 0
        while self.has(f"{name}.conv_list.{i}"):
            x = F.gelu(x + self.conv(f"{name}.conv_list.{i}", x, groups=x.shape[1]))
            i += 1
        x = F.gelu(x + self.conv(f"{name}.pw", x))
        return self.conv(f"{name}.ffn2.2", F.gelu(self.conv(f"{name}.ffn2.0", x)))


# -- correlation (official CorrBlock + bilinear_sampler) -------------------------------------------------
def _pool(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-2] > 1 and x.shape[-1] > 1:
        return F.avg_pool2d(x, 2, stride=2)
    kh, kw = (2 if x.shape[-2] > 1 else 1), (2 if x.shape[-1] > 1 else 1)  # see module docstring
    return F.avg_pool2d(x, (kh, kw), stride=(kh, kw))


def _bilinear_sampler(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    hh, ww = img.shape[-2:]
    xgrid, ygrid = coords.split([1, 1], dim=-1)
    if hh > 1 and ww > 1:
        grid = torch.cat([2 * xgrid / (ww - 1) - 1, 2 * ygrid / (hh - 1) - 1], dim=-1)
        return F.grid_sample(img, grid, align_corners=True)
    grid = torch.cat([(2 * xgrid + 1) / ww - 1, (2 * ygrid + 1) / hh - 1], dim=-1)  # see module docstring
    return F.grid_sample(img, grid, align_corners=False)


class OfficialCorrBlock:
    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, num_levels: int = 4, radius: int = 4):
        self.num_levels, self.radius = num_levels, radius
        b, d, h, w = fmap1.shape
        corr = torch.matmul(fmap1.view(b, d, h * w).transpose(1, 2), fmap2.view(b, d, h * w))
        corr = (corr.view(b, h, w, 1, h, w) / torch.sqrt(torch.tensor(d).float())).reshape(b * h * w, 1, h, w)
        self.pyramid = [corr]
        for _ in range(num_levels - 1):
            corr = _pool(corr)
            self.pyramid.append(corr)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        r = self.radius
        coords = coords.permute(0, 2, 3, 1)
        b, h1, w1, _ = coords.shape
        out = []
        for i, corr in enumerate(self.pyramid):
            dx = torch.linspace(-r, r, 2 * r + 1)
            dy = torch.linspace(-r, r, 2 * r + 1)
            delta = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).to(coords.device)
            lvl = coords.reshape(b * h1 * w1, 1, 1, 2) / 2**i + delta.view(1, 2 * r + 1, 2 * r + 1, 2)
            out.append(_bilinear_sampler(corr, lvl).view(b, h1, w1, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()


# -- memory (official MemoryManager, working memory only) ---------------------------------------------
def _do_softmax(similarity: torch.Tensor, return_usage: bool):
    maxes = torch.max(similarity, dim=1, keepdim=True)[0]
    x_exp = torch.exp(similarity - maxes)
    affinity = x_exp / torch.sum(x_exp, dim=1, keepdim=True)
    return (affinity, affinity.sum(dim=2)) if return_usage else affinity


class OfficialMemory:
    """Keys/values as (B, C, N), channel-first like the official KeyValueMemoryStore."""

    def __init__(self, train_avg_length: float, max_frames: int = 2, min_frames: int = 1):
        self.train_avg_length = train_avg_length
        self.max_frames, self.min_frames = max_frames, min_frames
        self.key = self.value = None
        self.hw = None

    def match(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        h, w = query.shape[-2:]
        query, key, value = query.flatten(2), key.flatten(2), value.flatten(2)
        if self.key is not None:
            mem_key = torch.cat([self.key, key], -1)
        else:
            mem_key = key
        scale = scale * math.log(mem_key.shape[-1], self.train_avg_length)
        similarity = torch.einsum("b c l, b c t -> b t l", query, mem_key) * scale
        if self.key is not None:
            affinity, usage = _do_softmax(similarity, return_usage=True)
            values = torch.cat([self.value, value], -1)
            self.last_usage = usage[:, :-h * w]
        else:
            affinity = _do_softmax(similarity, return_usage=False)
            values = value
        readout = values @ affinity
        return readout.view(readout.shape[0], -1, h, w)

    def add(self, key: torch.Tensor, value: torch.Tensor) -> None:
        if self.hw is None:
            self.hw = key.shape[-2] * key.shape[-1]
        key, value = key.flatten(2), value.flatten(2)
        self.key = key if self.key is None else torch.cat([self.key, key], -1)
        self.value = value if self.value is None else torch.cat([self.value, value], -1)
        if self.key.shape[-1] >= self.max_frames * self.hw:
            keep = self.min_frames * self.hw
            self.key, self.value = self.key[..., -keep:], self.value[..., -keep:]


def upsample_flow(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n, _, h, w = flow.shape
    mask = torch.softmax(mask.view(n, 1, 9, 8, 8, h, w), dim=2)
    up = F.unfold(8 * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
    up = torch.sum(mask * up, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(n, 2, 8 * h, 8 * w)


# -- the streaming loop -----------------------------------------------------------------------------------
class OfficialLikeStream:
    """Same interface as FlowStream.push: frames (H,W,3) uint8 RGB in; (H,W,2) float32 flows out."""

    def __init__(self, model: MemFlowNet, iters: int = 15):
        cfg = model.cfg
        if cfg.predict:
            raise ValueError("the official-like baseline is for the estimation model")
        self.cfg, self.iters = cfg, iters
        self.w = _Weights(model)
        self.scale = cfg.context_dim ** -0.5  # official att.scale = dim_head ** -0.5 (query not scaled)
        self.memory = OfficialMemory(cfg.train_avg_length, cfg.memory_max_frames, cfg.memory_min_frames)
        self.padder = None
        self.prev = None

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        if self.padder is None:
            self.padder = InputPadder(*image.shape[:2])
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        return 2 * (self.padder.pad(x) / 255.0) - 1

    def encode_context(self, image: torch.Tensor):
        out = self.w.encoder("cnet", image, "batch")
        net, inp = torch.split(out, [self.cfg.hidden_dim, self.cfg.context_dim], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)
        query, key = self.w.conv("att.to_qk", inp).chunk(2, dim=1)
        return query, key, net, inp

    def motion_and_value(self, flow: torch.Tensor, corr: torch.Tensor):
        w = self.w
        cor = w.pcblock("update_block.encoder.convc2", F.gelu(w.pcblock("update_block.encoder.convc1", corr)))
        flo = w.pcblock("update_block.encoder.convf2", w.conv("update_block.encoder.convf1", flow))
        out = w.pcblock("update_block.encoder.conv", torch.cat([cor, flo], dim=1))
        motion = torch.cat([out, flow], dim=1)
        return motion, w.conv("update_block.aggregator.to_v", motion)

    def update(self, net, inp, motion, glob):
        w = self.w
        net = w.pcblock("update_block.gru", torch.cat([net, inp, motion, glob], dim=1))
        delta = w.pcblock("update_block.flow_head", net)
        mask = 0.25 * w.conv("update_block.mask.2", F.relu(w.conv("update_block.mask.0", net)))
        return net, mask, delta

    @torch.inference_mode()
    def step(self, images: torch.Tensor):
        """images (1, 2, 3, H, W) normalised and padded -> (flow_low, flow_up) of frame 0 -> frame 1."""
        query, key, net, inp = self.encode_context(images[:, 0])
        b, t = images.shape[:2]
        fmaps = self.w.encoder("fnet", images.flatten(0, 1), "instance").unflatten(0, (b, t))
        h, w = fmaps.shape[-2:]
        coords0 = coords_grid(b, h, w, images.device)
        coords1 = coords_grid(b, h, w, images.device)
        corr_fn = OfficialCorrBlock(fmaps[:, 0], fmaps[:, 1], self.cfg.corr_levels, self.cfg.corr_radius)
        gamma = self.w.sd["update_block.aggregator.gamma"]
        for _ in range(self.iters):
            corr = corr_fn(coords1)
            flow = coords1 - coords0
            motion, value = self.motion_and_value(flow, corr)
            readout = self.memory.match(query, key, value, self.scale)
            net, mask, delta = self.update(net, inp, motion, motion + gamma * readout)
            coords1 = coords1 + delta
        flow_up = upsample_flow(coords1 - coords0, mask)
        self.memory.add(key, value)
        return coords1 - coords0, flow_up

    def push(self, image: np.ndarray) -> np.ndarray | None:
        x = self._prepare(image)
        prev, self.prev = self.prev, x
        if prev is None:
            return None
        _, flow_up = self.step(torch.stack([prev, x], dim=1))
        return np.ascontiguousarray(self.padder.unpad(flow_up)[0].permute(1, 2, 0).numpy())


# -- the MemFlow-P prediction loop ------------------------------------------------------------------------
def forward_interpolate(flow: torch.Tensor) -> torch.Tensor:
    """Official ``core/utils/utils.forward_interpolate`` (RAFT): (2,h,w) -> (2,h,w), on the CPU with numpy:
    splat each vector to x+u, y+v, keep targets strictly inside the grid, fill the grid by
    ``scipy.interpolate.griddata(method='nearest')``, once per component (a k-d tree built each time)."""
    from scipy import interpolate
    dx, dy = flow[0].detach().cpu().numpy(), flow[1].detach().cpu().numpy()
    ht, wd = dx.shape
    x0, y0 = np.meshgrid(np.arange(wd), np.arange(ht))
    x1, y1 = (x0 + dx).reshape(-1), (y0 + dy).reshape(-1)
    dx, dy = dx.reshape(-1), dy.reshape(-1)
    valid = (x1 > 0) & (x1 < wd) & (y1 > 0) & (y1 < ht)
    if not valid.any():
        return torch.zeros(2, ht, wd)
    x1, y1, dx, dy = x1[valid], y1[valid], dx[valid], dy[valid]
    flow_x = interpolate.griddata((x1, y1), dx, (x0, y0), method="nearest", fill_value=0)
    flow_y = interpolate.griddata((x1, y1), dy, (x0, y0), method="nearest", fill_value=0)
    return torch.from_numpy(np.stack([flow_x, flow_y], axis=0)).float()


class OfficialLikePredictStream:
    """The official MemFlow-P evaluation loop (``inference_core_predict.py`` + ``evaluate_MemFlowNet_predict``
    with ``use_gt=True``, reference section 6), written out the official way:

    * ``step(frame ti, flow_prev)``: the context encoder on frame ti; the readout of the memory alone
      (einsum + hand-written softmax, float32); ``gru_new`` once on cat[inp, motion_prompt + gamma *
      readout, flow_prev]; flow = delta + flow_prev, convex-upsampled;
    * ``set_memory(frames ti, ti+1, past flow)``: the feature encoder on BOTH frames (a batch of 2, so
      every frame is encoded twice), the all-pairs correlation pyramid rebuilt, one lookup at
      coords0 + flow, the motion encoder and ``to_v``; the value stored under frame ti's key;
    * ``flow_prev = forward_interpolate(flow)`` with scipy's griddata.

    ``push(frame t, past_flow_low)`` (past flow t-1 -> t on the 1/8 grid, None at t = 0) does
    set_memory for the pair (t-1, t) and then step(t): the official work for one frame, in the order of
    :meth:`flowcli.predict.PredictStream.push`. Returns the predicted flow t -> t+1, (H,W,2) float32.
    """

    def __init__(self, model: MemFlowNet):
        cfg = model.cfg
        if not cfg.predict:
            raise ValueError("the official-like prediction baseline is for the MemFlow-P model")
        self.cfg, self.w = cfg, _Weights(model)
        self.scale = cfg.context_dim ** -0.5
        self.memory = OfficialMemory(cfg.train_avg_length, cfg.memory_max_frames, cfg.memory_min_frames)
        self.padder = None
        self.prev = self.prev_key = None
        self.flow_prev = None

    _prepare = OfficialLikeStream._prepare
    motion_and_value = OfficialLikeStream.motion_and_value

    def read_memory(self, query: torch.Tensor) -> torch.Tensor | int:
        """Official ``match_memory(query, None, None)``: the stored keys only; the int 0 when empty."""
        mem = self.memory
        if mem.key is None:
            return 0
        h, w = query.shape[-2:]
        scale = self.scale * math.log(mem.key.shape[-1], self.cfg.train_avg_length)
        similarity = torch.einsum("b c l, b c t -> b t l", query.flatten(2), mem.key) * scale
        affinity, usage = _do_softmax(similarity, return_usage=True)
        mem.last_usage = usage
        readout = mem.value @ affinity
        return readout.view(readout.shape[0], -1, h, w)

    def set_memory(self, images: torch.Tensor, flow: torch.Tensor) -> None:
        """images (1, 2, 3, H, W) of frames ti, ti+1; flow (1, 2, h, w) ti -> ti+1 on the 1/8 grid."""
        b, t = images.shape[:2]
        fmaps = self.w.encoder("fnet", images.flatten(0, 1), "instance").unflatten(0, (b, t))
        h, w = fmaps.shape[-2:]
        corr_fn = OfficialCorrBlock(fmaps[:, 0], fmaps[:, 1], self.cfg.corr_levels, self.cfg.corr_radius)
        corr = corr_fn(coords_grid(b, h, w, images.device) + flow)
        _, value = self.motion_and_value(flow, corr)
        self.memory.add(self.prev_key, value)

    def step(self, image: torch.Tensor, flow_prev: torch.Tensor):
        w = self.w
        out = w.encoder("cnet", image, "batch")
        inp = torch.relu(out)
        query, key = w.conv("att.to_qk", inp).chunk(2, dim=1)
        self.prev_key = key
        glob = w.sd["motion_prompt"] + w.sd["update_block.aggregator.gamma"] * self.read_memory(query)
        net = w.pcblock("update_block.gru_new", torch.cat([inp, glob.expand_as(inp), flow_prev], dim=1))
        delta = w.pcblock("update_block.flow_head", net)
        mask = 0.25 * w.conv("update_block.mask.2", F.relu(w.conv("update_block.mask.0", net)))
        flow = delta + flow_prev
        return flow, upsample_flow(flow, mask)

    @torch.inference_mode()
    def push(self, image: np.ndarray, past_flow_low: torch.Tensor | None = None) -> np.ndarray:
        x = self._prepare(image)
        if past_flow_low is not None:
            self.set_memory(torch.stack([self.prev, x], dim=1), past_flow_low)
            self.flow_prev = forward_interpolate(past_flow_low[0])[None]
        if self.flow_prev is None:
            hp, wp = x.shape[-2:]
            self.flow_prev = torch.zeros(1, 2, hp // 8, wp // 8)
        self.prev = x
        _, flow_up = self.step(x, self.flow_prev)
        return np.ascontiguousarray(self.padder.unpad(flow_up)[0].permute(1, 2, 0).numpy())
