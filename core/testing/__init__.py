"""``restorekit.testing``: the conformance kit a plugin author calls from their own tests.

Every check raises :class:`AssertionError` with a sentence saying what the component got wrong, so it reads well
under pytest (the kit does not import pytest). Typical use::

    from restorekit.testing import check_generator, check_loss, check_validator, make_registry
    import my_plugin.plugin

    def test_my_generator(tmp_path):
        reg = make_registry(my_plugin.plugin)
        check_generator(reg, "mynet", {"scale": 2}, tmp_dir=tmp_path)

What each kind gets:

* every component: :func:`check_params` (a pydantic model that rejects unknown keys and describes every field);
* generator: :func:`check_generator` = builds from the given or default params (:func:`build_generator`), maps an LR
  batch to ``scale``× output (:func:`check_forward`), honours ``size_multiple`` (:func:`check_size_multiple`),
  survives a state-dict round trip through :func:`restorekit.save_generator` and :func:`restorekit.load`
  (:func:`check_state_dict_roundtrip`), a flow also an encode/decode round trip with finite log-determinant
  (:func:`check_flow`), a component that claims ``exportable=True`` an export equal to eager on ``torch.export`` and
  (with the ``export`` extra) onnxruntime (:func:`check_export`), and trains for a few steps through the real training path (:func:`check_training`);
* loss: :func:`check_loss` = callable (plain function or ``nn.Module``) on a tiny state, finite scalar with finite
  gradients, then a few training steps;
* validator: :func:`check_validator` = called with a model, :class:`~restorekit.Sample` items and a
  :class:`~restorekit.ValidationContext`, returns finite metrics and one ``per_image`` row per sample, then runs as a
  validator of a tiny training;
* injector: :func:`check_injector` = returns a dict of new state entries.

:func:`make_registry` builds a fresh registry with your plugin (and restorekit's builtins and the kit's own tiny
generator ``kit_upsampler``, which losses and validators train with when you bring no generator of your own).

Layout (one job per module): ``kit`` (the kit's tiny generator, :func:`make_registry`, :func:`check_params`),
``data`` (generated images, samples and states), ``generators`` (the single generator checks), ``flows``
(:func:`check_flow`), ``training`` (:func:`check_training`), ``components`` (the checks of a whole component per kind).
"""

from __future__ import annotations

from .components import check_component, check_generator, check_injector, check_loss, check_validator
from .data import make_samples, tiny_state, write_images
from .exports import check_export, onnx_available
from .flows import check_flow
from .generators import build_generator, check_forward, check_size_multiple, check_state_dict_roundtrip
from .kit import KitUpsampler, KitUpsamplerParams, _KitPlugin, check_params, make_registry
from .training import check_training

__all__ = [
    "KitUpsampler",
    "build_generator",
    "check_component",
    "check_export",
    "check_flow",
    "check_forward",
    "check_generator",
    "check_injector",
    "check_loss",
    "check_params",
    "check_size_multiple",
    "check_state_dict_roundtrip",
    "check_training",
    "check_validator",
    "make_registry",
    "make_samples",
    "onnx_available",
    "tiny_state",
    "write_images",
]
