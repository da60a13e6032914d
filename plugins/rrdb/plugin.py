"""Hook implementations of the ``rrdb`` plugin (entry point ``rrdb = "restorekit_rrdb.plugin"``)."""

from __future__ import annotations

from typing import Any

from restorekit import GeneratorComponent, hookimpl

from .formats import convert_state_dict, detect, params_from_state_dict
from .params import PRESETS, RRDBParams, build_rrdb


@hookimpl
def restorekit_generators() -> list[GeneratorComponent[Any]]:
    return [
        GeneratorComponent(
            name="rrdb",
            params=RRDBParams,
            build=build_rrdb,
            summary="RRDB network (ESRGAN / Real-ESRGAN / SRFlow's RRDB), x1-x16; loads official, BasicSR "
            "and old ESRGAN files",
            flow=False,
            exportable=True,
            detect=detect,
            params_from_state_dict=params_from_state_dict,
            convert_state_dict=convert_state_dict,
            presets=PRESETS,
        )
    ]
