"""Model configuration: one dataclass describes every MemFlow variant we build.

The official checkpoints use :data:`OFFICIAL`; this project's CPU-trained weights
use a smaller configuration of the *same* code (fewer channels, smaller
depthwise kernels), selected by changing fields here, never by forking modules.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Widths and kernel sizes of a MemFlowNet. Defaults are the official basic-encoder model."""

    encoder_widths: tuple[int, int, int] = (64, 96, 128)  # BasicEncoder stage widths (1/2, 1/4, 1/8)
    feature_dim: int = 256        # fnet output channels (correlation features)
    hidden_dim: int = 128         # recurrent state "net" (tanh part of the cnet output)
    context_dim: int = 128        # context "inp" (relu part); also the attention key/query width
    corr_levels: int = 4
    corr_radius: int = 4
    corr_hidden: int = 256        # motion encoder: convc1 output
    corr_out: int = 192           # motion encoder: convc2 output
    flow_hidden: int = 128        # motion encoder: convf1 output
    flow_out: int = 64            # motion encoder: convf2 output
    motion_dim: int = 128         # motion features, including the 2 raw flow channels
    motion_kernels: tuple[int, ...] = (1, 15)   # depthwise kernels in motion encoder and flow head
    update_kernels: tuple[int, ...] = (1, 7)    # depthwise kernels in the update PCBlock ("gru")
    mask_hidden: int = 256
    pos_emb_size: int = 160       # official checkpoints carry unused RelPosEmb tables; 0 = omit them
    train_avg_length: float = 6624.0  # softmax-scale normaliser: ln(N)/ln(train_avg_length)
    memory_max_frames: int = 2    # official policy: when the store reaches this many frames ...
    memory_min_frames: int = 1    # ... keep only this many newest frames
    predict: bool = False         # MemFlowNet-P (prediction head) instead of the estimator

    @property
    def corr_planes(self) -> int:
        return self.corr_levels * (2 * self.corr_radius + 1) ** 2

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**values)


OFFICIAL = ModelConfig()

# This project's CPU-trained model: the same code with about a third of the parameters
# (2.0 M vs 6.3 M), half the channels and smaller depthwise kernels; ~3x cheaper per pixel.
# train_avg_length follows the official rule (H*W/64)*3/2 for its 192x256 training crop.
CPU_SMALL = ModelConfig(
    encoder_widths=(32, 48, 64), feature_dim=128, hidden_dim=64, context_dim=64,
    corr_hidden=128, corr_out=96, flow_hidden=64, flow_out=32, motion_dim=64,
    motion_kernels=(1, 7), update_kernels=(1, 5), mask_hidden=128, pos_emb_size=0,
    train_avg_length=1152.0,
)


@dataclass(frozen=True)
class Preset:
    """The settings an official checkpoint was trained and evaluated with."""

    name: str
    config: ModelConfig
    iters: int = 15
    checkpoint: str = ""
    description: str = ""


PRESETS: dict[str, Preset] = {
    "things": Preset("things", OFFICIAL.replace(train_avg_length=6750.0), 15, "MemFlowNet_things.pth",
                     "FlyingThings3D stage (training crop 400x720)"),
    "sintel": Preset("sintel", OFFICIAL.replace(train_avg_length=6624.0), 15, "MemFlowNet_sintel.pth",
                     "Sintel fine-tune (crop 368x768)"),
    "kitti": Preset("kitti", OFFICIAL.replace(train_avg_length=6480.0), 15, "MemFlowNet_kitti.pth",
                    "KITTI fine-tune (crop 288x960)"),
    "spring": Preset("spring", OFFICIAL.replace(train_avg_length=6624.0), 15, "MemFlowNet_spring.pth",
                     "Spring fine-tune (crop 368x768)"),
}


PREDICT_PRESETS: dict[str, Preset] = {
    "things": Preset("things", OFFICIAL.replace(train_avg_length=2250.0, predict=True), 1, "MemFlowNet_P_things.pth",
                     "MemFlow-P, FlyingThings3D stage"),
    "sintel": Preset("sintel", OFFICIAL.replace(train_avg_length=2208.0, predict=True), 1, "MemFlowNet_P_sintel.pth",
                     "MemFlow-P, Sintel fine-tune"),
}


def get_preset(name: str, kind: str = "estimate") -> Preset:
    """Official settings by name; ``kind`` is "estimate" (MemFlowNet) or "predict" (MemFlowNet-P)."""
    table = PREDICT_PRESETS if kind == "predict" else PRESETS
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} preset {name!r}; choose from {', '.join(table)}") from None
