"""restorekit_srflow: SRFlow (Lugmayr et al., arXiv 2006.14200) for restorekit.

Public API: :class:`SRFlowNet` (encode / decode / conditional_features / latent_shapes / forward), its params
model and factory (:class:`SRFlowParams`, :func:`build_srflow`, :data:`PRESETS`), the flow layers, and the
checkpoint functions (:func:`detect`, :func:`params_from_state_dict`, :func:`convert_state_dict`).
Latent-space tools live in the core (``restorekit.latents``) because they work for any flow.
"""

from .arch import FlowUpsamplerNet, LevelCond, SRFlowNet, geometry_error
from .formats import convert_state_dict, detect, params_from_state_dict
from .layers import ActNorm, CondAffineCoupling, FlowStep, InvConv1x1, Split2d, Squeeze
from .params import PRESETS, SRFlowParams, build_srflow

__all__ = [
    "PRESETS",
    "ActNorm",
    "CondAffineCoupling",
    "FlowStep",
    "FlowUpsamplerNet",
    "InvConv1x1",
    "LevelCond",
    "SRFlowNet",
    "SRFlowParams",
    "Split2d",
    "Squeeze",
    "build_srflow",
    "convert_state_dict",
    "detect",
    "geometry_error",
    "params_from_state_dict",
]
