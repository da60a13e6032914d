"""Running the network in each ``infer.mode``: :class:`Runner` builds the model, checks the run against it, and
maps a batch of prepared inputs to output images per slot, with tiling and the NaN ladder (a decode that is not
finite is redone at the lower temperatures of ``infer.nan_ladder``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..components import FlowModel
from ..data.io import image_size, read_image
from ..data.resize import downsample
from ..errors import UserError
from ..nonfinite import first_finite, ladder_below
from ..latents import (
    interpolate_latents,
    normalize_latents,
    sample_latents,
    scale_latents,
    temperature_at,
    transfer_latents,
    zeros_like_latents,
)
from ..padding import run_padded
from ..plan import Plan, build_network, check_infer_model
from ..runtime import DistContext, amp_dtype, unwrap
from ..perf import choose_layout, fast_inference, in_layout, maybe_compile
from ..tiling import (
    Tile,
    flow_alignment,
    flow_decoder,
    pad_to_multiple,
    round_down,
    tiled_flow_decode,
    tiled_flow_encode,
    tiled_forward,
)
from .inputs import InputReader, Prepared, collect_inputs
from .records import run_request
from .slots import HR_INPUT_MODES, REPORT_MODES, SUFFIX, OutputConfig, Slot, check_outputs, make_slots, tname


def batch_shapes(model: Any, lr_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The model's latent shapes for an LR batch of ``lr_shape``, with the batch size first."""
    shapes = []
    for s in model.latent_shapes(tuple(int(d) for d in lr_shape)):
        t = tuple(int(d) for d in s)
        shapes.append((int(lr_shape[0]),) + t[1:] if len(t) == 4 else (int(lr_shape[0]),) + t)
    return shapes


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Inference autocast: ``run.precision`` means what it means in training (bf16 on any device, fp16 on CUDA,
    which the plan checked)."""
    dtype = amp_dtype(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@dataclass
class Outcome:
    """One input's results: images per slot, one-line errors per slot, fallbacks."""

    images: dict[Slot, Tensor] = field(default_factory=dict)
    errors: dict[Slot, str] = field(default_factory=dict)
    fallbacks: dict[Slot, tuple[float, str]] = field(default_factory=dict)


class Runner:
    """Everything one inference run needs; :func:`restorekit.infer.infer` is its public face."""

    def __init__(self, plan: Plan, networks: Mapping[str, Any] | None) -> None:
        spec = plan.spec.infer
        if spec is None:
            raise UserError.at(plan.source, None, "run.mode = 'infer' needs an [infer] table")
        self.plan, self.spec, self.source = plan, spec, plan.source
        env = DistContext.read_env()
        self.rank, self.world = env.rank, env.world
        self.device = env.device_for(plan.device)
        self.out_dir = spec.output_dir if spec.output_dir is not None else plan.spec.run.output_dir / "infer"
        self.seed = plan.spec.run.seed
        self.precision = plan.spec.run.precision
        self.items = collect_inputs(spec.inputs, exclude=self.out_dir)
        net_name = spec.network
        self.net_plan = plan.networks[net_name]
        self.component = self.net_plan.component.name
        self.model = self._model(networks)
        self.layout: str | None = None  # chosen on the first batch (_fast_paths)
        # the same check --dry-run makes on the meta-device build (the spec's own checks ran in the spec and plan)
        check_infer_model(spec, self.model, network=net_name, component=self.component, source=self.source)
        self.scale = int(self.model.scale)
        self.size_multiple = max(1, int(getattr(self.model, "size_multiple", 1) or 1))
        self.flow = isinstance(self.model, FlowModel)
        self.hr_input = spec.mode in HR_INPUT_MODES or spec.input_is_hr
        self.max_pixels = plan.spec.run.max_pixels
        self.reader = InputReader(self.scale, self.hr_input, self.scale * (self.size_multiple if self.flow else 1),
                                  spec.downsampler, self.component, self.max_pixels)
        self.ladder = [float(t) for t in spec.nan_ladder]
        uses_reference = spec.mode in ("latent_transfer", "interpolate")  # the plan checked the files exist
        self.tmap = None
        if spec.temperature_map is not None and self.flow:
            self.tmap = read_image(spec.temperature_map, max_pixels=self.max_pixels).rgb.mean(0, keepdim=True)[None]
        self.slots = make_slots(spec, flow=self.flow, seed=self.seed, reference=spec.reference)
        check_outputs(self.items, self.slots, self.out_dir, SUFFIX[spec.format],
                      (spec.reference, spec.temperature_map), self.source)
        self.ref_latents: list[Tensor] | None = None
        self.ref_hw: tuple[int, int] | None = None
        if spec.reference is not None and uses_reference:
            self._encode_reference(spec.reference)
        self.decode = flow_decoder(self.model) if self.flow else None
        optimised = any(net_name in sp.spec.networks for sp in plan.steps)  # else its weights are the plan's
        trained = self.model if networks is not None and net_name in networks and optimised else None
        # what the sink needs of this run, fixed now; every output's record starts from run_request (.records)
        self.output = OutputConfig(self.out_dir, SUFFIX[spec.format], spec.mode, self.scale, tuple(self.slots),
                                   run_request(self, trained), self.reader,
                                   spec.input_is_hr and spec.mode in REPORT_MODES, self.source, self.rank, self.world)

    def _model(self, networks: Mapping[str, Any] | None) -> Any:
        name = self.spec.network
        if networks is not None and name in networks:
            model = unwrap(networks[name])
        else:
            model = build_network(self.net_plan, self.device)
        if isinstance(model, nn.Module):
            model = model.to(self.device).eval()
        return model

    def _encode_reference(self, ref: Path) -> None:
        img = read_image(ref, max_pixels=self.max_pixels)
        hr = self.reader.crop_hr(img.rgb, ref)
        with torch.inference_mode(), autocast(self.device, self.precision):
            hr_b = hr[None].to(self.device)
            lr_b = downsample(hr_b, self.scale, self.spec.downsampler)
            self.ref_latents = self._encode(hr_b, lr_b)
        self.ref_hw = (int(hr.shape[-2]), int(hr.shape[-1]))
        self._precheck_reference_sizes()

    def _precheck_reference_sizes(self) -> None:
        """latent_transfer/interpolate: every target must fit in the reference (read sizes, not pixels)."""
        assert self.ref_latents is not None and self.spec.reference is not None and self.ref_hw is not None
        for item in self.items:
            try:
                h, w = image_size(item.path)
            except UserError:  # unreadable targets are reported when they are processed
                continue
            if self.hr_input:
                m = self.reader.hr_multiple
                h, w = round_down(h, m) // self.scale, round_down(w, m) // self.scale
            if h < 1 or w < 1:
                continue
            lr_shape = self._padded_lr_shape(h, w)
            for ref, tgt in zip(self.ref_latents, batch_shapes(self.model, lr_shape)):
                if ref.shape[-2] < tgt[-2] or ref.shape[-1] < tgt[-1]:
                    raise UserError.at(
                        self.source, "infer.reference", f"{self.spec.reference} (HR {self.ref_hw[0]}x{self.ref_hw[1]}) "
                        f"is smaller than the target {item.path} (HR {lr_shape[2] * self.scale}x{lr_shape[3] * self.scale}); "
                        "use a reference at least as large as every target"
                    )

    def _padded_lr_shape(self, h: int, w: int) -> tuple[int, int, int, int]:
        align = self._align(h, w)
        return (1, 3, -(-h // align) * align, -(-w // align) * align)

    def _align(self, h: int, w: int) -> int:
        """The LR padding multiple: size_multiple, and for flows what makes latent crops exact (tiling)."""
        m = self.size_multiple
        if not self.flow or self.spec.tile is None:
            return m
        hp, wp = -(-h // m) * m, -(-w // m) * m
        try:
            return flow_alignment(self.scale, m, (hp, wp), batch_shapes(self.model, (1, 3, hp, wp)))
        except ValueError:
            return m

    # -- computing ---------------------------------------------------------------------------------------
    def run_batch(self, batch: Sequence[Prepared]) -> list[Outcome]:
        lr = torch.stack([p.lr for p in batch]).to(self.device)
        hr = torch.stack([p.hr for p in batch]).to(self.device) if batch[0].hr is not None else None
        with torch.inference_mode(), autocast(self.device, self.precision):
            self._fast_paths(lr)
            lr = in_layout(self.layout, lr)
            if not self.flow:
                return self._run_plain(lr)
            return self._run_flow(lr, hr)

    def _fast_paths(self, lr: Tensor) -> None:
        """Once, on the first batch: the network's declared inference switches (restorekit.perf.fast_inference),
        the faster memory layout (restorekit.perf.choose_layout, kept in ``self.layout``) and, with
        ``run.compile``, torch.compile where it measurably helps."""
        if self.layout is not None or not isinstance(self.model, nn.Module):
            return
        fast_inference(self.model, self.net_plan.component.switches)
        try:
            self.layout = choose_layout(self.model, lr)
        except (RuntimeError, ValueError, UserError):  # a network that cannot run the probe crop keeps NCHW
            self.layout = "contiguous"
        if self.plan.spec.run.compile:
            maybe_compile(self.model, lr)

    def _encode(self, hr: Tensor, lr: Tensor) -> list[Tensor]:
        """The latents of ``hr`` given ``lr``. With ``infer.tile`` the image is encoded tile by tile (peak memory
        follows the tile; :func:`restorekit.tiling.tiled_flow_encode`), on the padding the tiled decode uses."""
        tile = self.spec.tile
        if tile is None:
            return [z.float() for z in self.model.encode(hr, lr).latents]
        h, w = int(lr.shape[-2]), int(lr.shape[-1])
        align = self._align(h, w)
        lr_pad, _ = pad_to_multiple(lr, align)
        hr_pad, _ = pad_to_multiple(hr, align * self.scale)
        if tuple(hr_pad.shape[-2:]) != (lr_pad.shape[-2] * self.scale, lr_pad.shape[-1] * self.scale):
            return [z.float() for z in self.model.encode(hr, lr).latents]
        zs = tiled_flow_encode(self.model, hr_pad, lr_pad, tile=tile.size, overlap=tile.overlap)
        return [z.float() for z in zs]

    def _run_plain(self, lr: Tensor) -> list[Outcome]:
        s = self.scale
        if self.spec.tile is not None:
            res = tiled_forward(self.model, lr, tile=self.spec.tile.size, overlap=self.spec.tile.overlap,
                                scale=s, size_multiple=self.size_multiple)
            out, bad = res.outputs[0], res.nonfinite[0].tolist()
        else:
            try:
                out = run_padded(self.model, lr, multiple=self.size_multiple, scale=s).float()
            except ValueError as exc:  # the output is not scale x the input
                raise RuntimeError(f"{self.component!r} {exc}") from None
            bad = (~torch.isfinite(out).flatten(1).all(1)).tolist()
        slot = self.slots[0]
        outcomes = []
        for b in range(lr.shape[0]):
            o = Outcome()
            if bad[b]:
                o.errors[slot] = "the network output is not finite"
            else:
                o.images[slot] = out[b].clamp(0, 1)
            outcomes.append(o)
        return outcomes

    def _noise(self, shapes: Sequence[tuple[int, ...]], seed: int, batch: int) -> list[Tensor]:
        """Standard-normal latents, the same for every image of a batch size 1 shape and seed (CPU draws,
        so results do not depend on the device)."""
        one = [(1,) + tuple(s[1:]) for s in shapes]
        per_item = []
        for _ in range(batch):
            gen = torch.Generator().manual_seed(seed)
            per_item.append(sample_latents(one, 1.0, gen))
        return [torch.cat([z[k] for z in per_item]).to(self.device) for k in range(len(shapes))]

    def _tmap_for(self, hr_hw: tuple[int, int], padded_hw: tuple[int, int]) -> Tensor | None:
        if self.tmap is None:
            return None
        m = temperature_at(self.tmap.to(self.device), hr_hw)  # the resize SRFlowNet.forward uses too
        ph, pw = padded_hw[0] - hr_hw[0], padded_hw[1] - hr_hw[1]
        return F.pad(m, (0, pw, 0, ph), mode="replicate") if ph or pw else m

    def _jobs(self, lr: Tensor, hr: Tensor | None, shapes: list[tuple[int, ...]]) -> list[tuple[Slot, list[Tensor], float, bool]]:
        """Every image slot of the mode: (slot, base latents, factor, whether the temperature map applies)."""
        mode, batch = self.spec.mode, lr.shape[0]
        jobs: list[tuple[Slot, list[Tensor], float, bool]] = []
        image_slots = [sl for sl in self.slots if sl.kind == "image"]
        if mode in ("sr", "sample", "feed_through"):
            noise: dict[int, list[Tensor]] = {}
            for sl in image_slots:
                assert sl.seed is not None and sl.temperature is not None
                if sl.seed not in noise:
                    noise[sl.seed] = self._noise(shapes, sl.seed, batch)
                jobs.append((sl, noise[sl.seed], sl.temperature, True))
        elif mode == "restore":
            assert hr is not None
            base = normalize_latents(self._encode(hr, lr))
            for sl in image_slots:
                assert sl.temperature is not None
                jobs.append((sl, base, sl.temperature, True))
        elif mode == "latent_transfer":
            assert self.ref_latents is not None
            jobs.append((image_slots[0], transfer_latents(self.ref_latents, shapes), 1.0, False))
        else:  # interpolate
            assert hr is not None
            target = self._encode(hr, lr)
            start = (transfer_latents(self.ref_latents, shapes) if self.ref_latents is not None
                     else zeros_like_latents(target))
            frames = interpolate_latents(start, target, self.spec.frames, self.spec.interpolation)
            for sl in image_slots:
                assert sl.frame is not None
                jobs.append((sl, frames[sl.frame], 1.0, False))
        return jobs

    def _run_flow(self, lr: Tensor, hr: Tensor | None) -> list[Outcome]:
        batch, _, h, w = lr.shape
        s = self.scale
        lr_pad, _ = pad_to_multiple(lr, self._align(h, w))
        shapes = batch_shapes(self.model, lr_pad.shape)
        tmap = self._tmap_for((h * s, w * s), (lr_pad.shape[-2] * s, lr_pad.shape[-1] * s))
        jobs = self._jobs(lr, hr, shapes)

        def effective(base: Sequence[Tensor], t: float, use_map: bool, tm: Tensor | None) -> list[Tensor]:
            return scale_latents(base, t * tm if (use_map and tm is not None) else t)

        outs, nonfinite, bad_tiles = self._decode(lr_pad, [effective(base, t, use_map, tmap) for _, base, t, use_map in jobs])
        outcomes = [Outcome() for _ in range(batch)]
        for j, (sl, base, t, use_map) in enumerate(jobs):
            for b in range(batch):
                if not nonfinite[j][b]:
                    outcomes[b].images[sl] = outs[j][b, :, : h * s, : w * s].clamp(0, 1)
                    continue
                where = f" in {bad_tiles[(j, b)].describe()}" if (j, b) in bad_tiles else ""
                reason = f"non-finite decode{where}"
                zb = [z[b : b + 1] for z in base]
                tm = tmap[b : b + 1] if tmap is not None and tmap.shape[0] > 1 else tmap

                def retry(lt: float, lb: Tensor = lr_pad[b : b + 1], zb: list[Tensor] = zb, tm: Tensor | None = tm,
                          use_map: bool = use_map) -> Tensor | None:
                    o2, nf2, _ = self._decode(lb, [effective(zb, lt, use_map, tm)])
                    return None if nf2[0][0] else o2[0]

                rungs = ladder_below(t, self.ladder)  # the NaN ladder (restorekit.nonfinite), one image at a time
                found = first_finite(retry, rungs)
                if found is not None:
                    outcomes[b].images[sl] = found[0][0, :, : h * s, : w * s].clamp(0, 1)
                    outcomes[b].fallbacks[sl] = (found[1], reason)
                else:
                    tried = ", ".join(tname(x) for x in [t, *rungs])
                    outcomes[b].errors[sl] = f"{reason}; still not finite at temperatures {tried}"
        return outcomes

    def _decode(self, lr: Tensor, sets: Sequence[Sequence[Tensor]]) -> tuple[list[Tensor], list[list[bool]], dict[tuple[int, int], Tile]]:
        assert self.decode is not None
        if self.spec.tile is not None:
            res = tiled_flow_decode(self.model, lr, sets, tile=self.spec.tile.size, overlap=self.spec.tile.overlap,
                                    decode=self.decode)
            return res.outputs, res.nonfinite.tolist(), res.bad_tiles
        outs = [o.float() for o in self.decode(lr, sets)]
        flags = [(~torch.isfinite(o).flatten(1).all(1)).tolist() for o in outs]
        return outs, flags, {}


__all__ = ["Outcome", "Runner", "autocast", "batch_shapes"]
