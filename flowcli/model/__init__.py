"""The MemFlow network (estimator and predictor), its config and checkpoint loading."""
from .config import CPU_SMALL, OFFICIAL, PREDICT_PRESETS, PRESETS, ModelConfig, Preset, get_preset
from .memflow import Context, Estimate, MemFlowNet, coords_grid, upsample_convex
from .memory import KeyValueMemory
from .padding import InputPadder
from .warm_start import forward_interpolate

__all__ = ["CPU_SMALL", "OFFICIAL", "PREDICT_PRESETS", "PRESETS", "ModelConfig", "Preset", "get_preset", "Context", "Estimate", "MemFlowNet",
           "coords_grid", "upsample_convex", "KeyValueMemory", "InputPadder", "forward_interpolate"]
