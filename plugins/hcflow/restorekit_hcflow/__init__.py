"""restorekit_hcflow: HCFlow (Liang et al., ICCV 2021, arXiv 2108.05301) for restorekit, a separate distribution
(``restorekit-hcflow``) registered through the ``restorekit.plugins`` entry point.

Public API: :class:`HCFlowNet` (``encode`` / ``encode_full`` / ``decode`` / ``conditional_features`` /
``latent_shapes`` / ``forward``; the plain architecture is :class:`HCFlowArch`), its params model and factory
(:class:`HCFlowParams`, :func:`build_hcflow`, :data:`PRESETS`), the checkpoint functions (:func:`detect`,
:func:`params_from_state_dict`, :func:`convert_state_dict`) and the flow layers (HCFlow's own, and the ones it takes
from ``restorekit_srflow`` with HCFlow's reference initialisation: :class:`ActNorm`, :class:`InvConv1x1`).
"""

from .arch import LR_LOGSCALE, CondFlow, Encoded, HCFlowArch, HCFlowFlow, cond_input_channels, level_channels
from .formats import convert_state_dict, detect, params_from_state_dict
from .layers import ActNorm, AffineCoupling, FlowStep, InvConv1x1, Split, gaussian_logp
from .model import HCFlowNet
from .params import PRESETS, HCFlowParams, build_hcflow

__all__ = [
    "LR_LOGSCALE",
    "PRESETS",
    "ActNorm",
    "AffineCoupling",
    "CondFlow",
    "Encoded",
    "FlowStep",
    "HCFlowArch",
    "HCFlowFlow",
    "HCFlowNet",
    "HCFlowParams",
    "InvConv1x1",
    "Split",
    "build_hcflow",
    "cond_input_channels",
    "convert_state_dict",
    "detect",
    "gaussian_logp",
    "level_channels",
    "params_from_state_dict",
]
