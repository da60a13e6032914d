"""Spec + registry → Plan: every component found, every params model validated, the device chosen.

Nothing heavy is built here; :func:`build_network` makes a module from a :class:`NetworkPlan`.

Layout (one job per module): ``plans`` (the plan's dataclasses), ``make`` (:func:`make_plan`), ``networks``
(generator params, weights, :func:`build_network`, :func:`detect_generator`), ``weights`` (the one door for
weights: :func:`resolve_generator` reads headers, :func:`build_generator` reads the tensors once), ``checks`` (device, state-key flow,
``[infer]`` and run checks).
"""

from __future__ import annotations

from .checks import STATE_INPUTS, check_infer_model, check_run, check_state_flow, resolve_device
from .make import make_plan
from .networks import build_network, detect_generator, generator_params, load_weights, validate_params
from .plans import ComponentPlan, NetworkPlan, Plan, StepPlan
from .weights import ResolvedGenerator, build_generator, resolve_generator

__all__ = [
    "STATE_INPUTS",
    "ComponentPlan",
    "NetworkPlan",
    "Plan",
    "StepPlan",
    "ResolvedGenerator",
    "build_generator",
    "build_network",
    "check_infer_model",
    "check_run",
    "check_state_flow",
    "detect_generator",
    "generator_params",
    "load_weights",
    "make_plan",
    "resolve_device",
    "resolve_generator",
    "validate_params",
]
