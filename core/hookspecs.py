"""The hook specifications of restorekit: one hook per component kind, and one for model catalogue entries.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, registered through the
entry-point group ``restorekit.plugins``. Each hook takes no arguments and returns a list of components
(``restorekit_catalogue``: of model catalogue entries).
"""

from __future__ import annotations

import os
from typing import Any

import pluggy

from .components import (
    GeneratorComponent,
    InjectorComponent,
    LossComponent,
    ValidatorComponent,
)
from .model_entry import ModelEntry

PROJECT = "restorekit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def restorekit_generators() -> list[GeneratorComponent]:
    """Return the generator networks this plugin provides.

    Each :class:`~restorekit.GeneratorComponent` has a ``name`` (the ``component`` of a
    ``[networks.<name>]`` table), a pydantic ``params`` model and ``build(params) -> nn.Module``; the module
    maps a (B,C,h,w) LR batch in [0,1] to SR and carries ``scale``, ``size_multiple`` and ``arch_params``.
    Optional ``detect``/``params_from_state_dict``/``convert_state_dict``/``presets`` let
    :func:`restorekit.load` recognise and load foreign checkpoints.
    """


@hookspec
def restorekit_injectors() -> list[InjectorComponent]:
    """Return the injectors this plugin provides.

    ``build(params, networks) -> Injector``: an injector is called as ``injector(state, step)`` and returns
    a dict of new state entries (e.g. ``{"sr": ...}``); ``networks`` maps spec network names to modules.
    """


@hookspec
def restorekit_losses() -> list[LossComponent]:
    """Return the losses this plugin provides.

    ``build(params) -> Loss``: a loss is called as ``loss(state)`` and returns a weighted scalar tensor.
    """


@hookspec
def restorekit_validators() -> list[ValidatorComponent]:
    """Return the validators this plugin provides.

    ``build(params) -> Validator``: called as ``validator(model, samples, ctx)`` with
    :class:`~restorekit.Sample` items and a :class:`~restorekit.ValidationContext`; returns a
    :class:`~restorekit.ValidationResult` (averaged metrics and per-image rows). A validator that also offers
    ``score(item, ctx)`` (:class:`~restorekit.SampleScorer`, e.g. a :class:`~restorekit.ScoringValidator`) judges
    outputs: evaluation hands it every image's N outputs (:class:`~restorekit.SRSamples`) at every temperature, and
    ``restore-run evaluate`` outputs read from files.
    """


@hookspec
def restorekit_catalogue() -> list[ModelEntry | dict[str, Any] | str | os.PathLike[str]]:
    """Return model catalogue entries this plugin adds (``restore-run --list-models``, ``restorekit.load(name)``,
    ``networks.<n>.model``).

    Each item is a :class:`~restorekit.ModelEntry`, a table with the same fields (``name`` included), or the path
    of a catalogue TOML file the plugin ships (``[models.<name>]`` tables, the layout of restorekit's own
    ``catalogue.toml``). A plugin's entry replaces a packaged entry of the same name; files named in
    ``$RESTOREKIT_CATALOGUE`` replace both.
    """


CATALOGUE_HOOK = restorekit_catalogue.__name__
