"""restorekit_rrdb: the RRDB network (ESRGAN generator, SRFlow's conditional network) for restorekit.

Public API: the network (:class:`RRDBNet`, :class:`RRDBFeatures`, :func:`bicubic_upsample`; its blocks :class:`RRDB`
and :class:`ResidualDenseBlock`, which restorekit-hcflow's feature extractors reuse), its params model and factory
(:class:`RRDBParams`, :func:`build_rrdb`, :data:`PRESETS`) and checkpoint layouts (:func:`detect`,
:func:`params_from_state_dict`, :func:`convert_state_dict`, :func:`detect_layout`, :func:`to_official_names`).
"""

from .arch import RRDB, RRDBFeatures, RRDBNet, ResidualDenseBlock, bicubic_upsample, count_parameters
from .formats import (
    LAYOUTS,
    Layout,
    convert_state_dict,
    detect,
    detect_layout,
    params_from_state_dict,
    to_official_names,
)
from .params import PRESETS, RRDBParams, build_rrdb

__all__ = [
    "LAYOUTS",
    "PRESETS",
    "RRDB",
    "Layout",
    "RRDBFeatures",
    "RRDBNet",
    "RRDBParams",
    "ResidualDenseBlock",
    "bicubic_upsample",
    "build_rrdb",
    "convert_state_dict",
    "count_parameters",
    "detect",
    "detect_layout",
    "params_from_state_dict",
    "to_official_names",
]
