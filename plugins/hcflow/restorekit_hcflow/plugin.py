"""Hook implementations of the ``hcflow`` plugin (nothing else lives here)."""

from __future__ import annotations

from typing import Any

from restorekit import GeneratorComponent, hookimpl

from .catalogue import CATALOGUE
from .formats import convert_state_dict, detect, params_from_state_dict
from .params import PRESETS, HCFlowParams, build_hcflow


@hookimpl
def restorekit_generators() -> list[GeneratorComponent[Any]]:
    return [
        GeneratorComponent(
            name="hcflow",
            params=HCFlowParams,
            build=build_hcflow,
            summary="HCFlow hierarchical conditional flow, ICCV 2021 (official checkpoints, sampling, latent tools)",
            flow=True,
            detect=detect,
            params_from_state_dict=params_from_state_dict,
            convert_state_dict=convert_state_dict,
            presets=PRESETS,
        )
    ]


@hookimpl
def restorekit_catalogue() -> list[str]:
    return [str(CATALOGUE)]
