"""restorekit_srflow: SRFlow (Lugmayr et al., arXiv 2006.14200) for restorekit.

Public API: :class:`SRFlowNet` (``encode`` / ``decode`` / ``conditional_features`` / ``latent_shapes`` /
``forward`` / ``rrdb_forward`` / ``export_graph`` — the ``sample``, ``mean`` and ``encode`` graphs of
:mod:`restorekit_srflow.export`; the plain architecture is :class:`SRFlowArch`), its params model and factory
(:class:`SRFlowParams`, :func:`build_srflow`, :data:`PRESETS`), the checkpoint functions (:func:`detect`,
:func:`params_from_state_dict`, :func:`convert_state_dict`), the latent tools (:func:`sample_latents`,
:func:`normalize_latents`, :func:`transfer_latents`, :func:`interpolate_latents`, … — implemented in
``restorekit.latents``, re-exported), and the flow layers and checks restorekit-hcflow builds on too
(:class:`ActNorm`, :class:`InvConv1x1`, :class:`Squeeze`, :class:`Conv2dActNorm`, :class:`ZeroConv2d`,
:func:`gaussian_logp`, :func:`sum_per_sample`, :func:`latent_batch`, …).
"""

from restorekit import (  # the flow-agnostic latent tools, next to the network for SRFlow users
    interpolate_latents,
    latent_norm,
    normalize_latents,
    sample_latents,
    scale_latents,
    temperature_at,
    transfer_latents,
    zeros_like_latents,
)

from .arch import Encoded, FlowUpsamplerNet, LevelCond, SRFlowArch, geometry_error, latent_batch
from .formats import convert_state_dict, detect, params_from_state_dict
from .layers import (
    ActNorm,
    CondAffineCoupling,
    Conv2dActNorm,
    CouplingCond,
    FlowStep,
    InvConv1x1,
    Split2d,
    Squeeze,
    ZeroConv2d,
    gaussian_logp,
    set_actnorm_initialized,
    sum_per_sample,
)
from .model import SRFlowNet
from .params import PRESETS, SRFlowParams, build_srflow

__all__ = [
    "PRESETS",
    "ActNorm",
    "CondAffineCoupling",
    "Conv2dActNorm",
    "CouplingCond",
    "Encoded",
    "FlowStep",
    "FlowUpsamplerNet",
    "InvConv1x1",
    "LevelCond",
    "SRFlowArch",
    "SRFlowNet",
    "SRFlowParams",
    "Split2d",
    "Squeeze",
    "ZeroConv2d",
    "build_srflow",
    "convert_state_dict",
    "detect",
    "gaussian_logp",
    "geometry_error",
    "interpolate_latents",
    "latent_batch",
    "latent_norm",
    "normalize_latents",
    "params_from_state_dict",
    "sample_latents",
    "scale_latents",
    "set_actnorm_initialized",
    "sum_per_sample",
    "temperature_at",
    "transfer_latents",
    "zeros_like_latents",
]
