"""Hook implementations of the ``srflow`` plugin (nothing else lives here)."""

from __future__ import annotations

from typing import Any

from restorekit import GeneratorComponent, Switches, hookimpl

from .formats import convert_state_dict, detect, params_from_state_dict
from .params import PRESETS, SRFlowParams, build_srflow


@hookimpl
def restorekit_generators() -> list[GeneratorComponent[Any]]:
    return [
        GeneratorComponent(
            name="srflow",
            params=SRFlowParams,
            build=build_srflow,
            summary="SRFlow conditional normalising flow (official checkpoints, sampling, latent tools)",
            flow=True,
            exportable=True,
            detect=detect,
            params_from_state_dict=params_from_state_dict,
            convert_state_dict=convert_state_dict,
            presets=PRESETS,
            # factor_cond is left to the user (it halves the speed when another process shares the CPU:
            # docs/performance.md); the folds are the same function with less stored memory
            switches=Switches(training=("fold_actnorm", "fold_scale"), frozen_in_training=("RRDB.",)),
        )
    ]
