"""VIDEODIT_MODEL: a loaded diffusion model plus its own list of patches.

ComfyUI caches node outputs and lets one output feed several branches, so a node that changed
its input model in place would change it for every branch. Patch nodes (LoRA, block swap, step
cache, VACE hints) therefore never touch their input: :meth:`VideoModel.with_patch` returns a
new :class:`VideoModel` that shares the loaded weights (one :class:`SharedWeights`) and carries
the old patches plus the new one, as ComfyUI's ``ModelPatcher.clone()`` does.

A patch changes a model in one or both of two ways (:class:`ModelPatch`):

* **weights**: new values for some parameters, computed from the originals (a LoRA merge).
  They are applied to the shared network when a model object is *used* for a velocity call,
  after undoing whatever patch set a sibling model object applied before; originals are kept
  aside (on the offload device) and put back exactly. So the weights always match the patches
  of the model object being run, in any execution order, and a model used twice in a row is
  not merged twice.
* **the velocity call**: a wrapper around ``velocity(x, sigma, inputs)`` (a step cache, hints
  added to the blocks). Wrappers are built fresh for every sampling run (:meth:`VideoModel.run`),
  so any state they keep starts clean for each run and each expert. They see the run's
  :class:`RunInfo` (its noise schedule, per-run state and forward options) and may register
  a callback for the end of the run (to log what they did).
* **where the weights are while it runs**: a patch may hand back its own
  :class:`..core.placement.Placement` for the shared network (block swap streams the blocks
  instead of loading the network whole); the last patch that does governs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.conditioning import ModelInputs
from ..core.latent_formats import LatentFormat
from ..core.placement import Placement
from ..core.run_info import RunInfo
from .base import ImageInputs, LoadedWeights, ModelFamily

Velocity = Callable[[torch.Tensor, float, ModelInputs], torch.Tensor]
WeightUpdate = Callable[[torch.Tensor], torch.Tensor]  # original -> patched (a new tensor)


class ModelPatch:
    """One change a patch node makes. Subclasses override what they change; patches are
    immutable once made (several model objects may share one)."""

    name = "patch"
    changes_weights = False   # True when weight_updates() returns anything

    def weight_updates(self, model: "VideoModel") -> dict[str, WeightUpdate]:
        """Parameter name (as in ``network.named_parameters()``) -> update."""
        return {}

    def wrap_velocity(self, velocity: Velocity, model: "VideoModel", run: RunInfo) -> Velocity:
        """The velocity call of one sampling run, wrapped (default: unchanged)."""
        return velocity

    def placement(self, model: "VideoModel", base: Placement) -> Placement | None:
        """Where the shared network's weights are while this model object runs (None: as
        ``base``, the loader's placement, says)."""
        return None

    def describe(self) -> str:
        return self.name


class SharedWeights:
    """The one copy of a loaded network's weights that every clone of a model shares, and
    which patch set is applied to it right now."""

    def __init__(self, loaded: LoadedWeights, family: ModelFamily, placement: Placement):
        self.loaded = loaded
        self.family = family
        self.placement = placement
        self._current_placement = placement          # the one that moved the weights last
        self._applied: tuple[ModelPatch, ...] = ()   # weight patches now merged, in order
        self._originals: dict[str, torch.Tensor] = {}

    @property
    def network(self) -> nn.Module:
        return self.placement.module

    def apply(self, patches: tuple[ModelPatch, ...], model: "VideoModel") -> None:
        """Make the network's weights those of ``patches`` (undoing another set first)."""
        wanted = tuple(p for p in patches if p.changes_weights)
        if len(wanted) == len(self._applied) and all(
                a is b for a, b in zip(wanted, self._applied)):
            return
        self.restore()
        updates: dict[str, list[WeightUpdate]] = {}
        for patch in wanted:
            for key, update in patch.weight_updates(model).items():
                updates.setdefault(key, []).append(update)
        parameters = dict(self.network.named_parameters())
        unknown = sorted(set(updates) - set(parameters))
        if unknown:
            raise KeyError(f"patch targets parameters the model does not have: {unknown[:5]}")
        with torch.no_grad():
            for key, chain in updates.items():
                parameter = parameters[key]
                original = parameter.data
                patched = original
                for update in chain:
                    patched = update(patched)
                if patched.shape != original.shape:
                    raise ValueError(f"patch changed the shape of {key}: "
                                     f"{tuple(original.shape)} -> {tuple(patched.shape)}")
                # Originals wait on the offload device, so a patched model on the GPU does not
                # also hold a second copy there.
                self._originals[key] = original.to(self.placement.offload_device)
                parameter.data = patched.to(original.device, original.dtype)
        self._applied = wanted

    def placement_in_use(self, placement: Placement) -> None:
        """Switch which placement manages the network, offloading through the previous one
        (its bookkeeping, e.g. ComfyUI's, then knows the weights left the device)."""
        if self._current_placement is not placement:
            self._current_placement.offload()
            self._current_placement = placement

    def offload(self) -> None:
        self._current_placement.offload()

    def restore(self) -> None:
        """Put the original weights back (nothing to do when no patch set is applied)."""
        if not self._originals:
            self._applied = ()
            return
        parameters = dict(self.network.named_parameters())
        with torch.no_grad():
            for key, original in self._originals.items():
                parameters[key].data = original.to(parameters[key].device)
        self._originals.clear()
        self._applied = ()


class VideoModel:
    """What flows along a VIDEODIT_MODEL link. Never changed after it is made."""

    def __init__(self, weights: SharedWeights, patches: tuple[ModelPatch, ...] = ()):
        self._weights = weights
        self.patches: tuple[ModelPatch, ...] = tuple(patches)

    @classmethod
    def from_loaded(cls, loaded: LoadedWeights, family: ModelFamily,
                    placement: Placement) -> "VideoModel":
        return cls(SharedWeights(loaded, family, placement))

    # -- what it is ----------------------------------------------------------------------------
    @property
    def family(self) -> ModelFamily:
        return self._weights.family

    @property
    def config(self) -> Any:
        return self._weights.loaded.config

    @property
    def variant(self) -> str:
        return self._weights.loaded.variant

    @property
    def latent_format(self) -> LatentFormat:
        return self._weights.loaded.latent_format

    @property
    def compute_dtype(self) -> torch.dtype:
        return self._weights.loaded.compute_dtype

    @property
    def file_name(self) -> str:
        return self._weights.loaded.file_name

    @property
    def notes(self) -> list[str]:
        return list(self._weights.loaded.notes)

    @property
    def image_inputs(self) -> ImageInputs:
        return self.family.image_inputs(self.config)

    @property
    def placement(self) -> Placement:
        return self._weights.placement

    @property
    def network(self) -> nn.Module:
        """The shared network (weights as the last model object run left them)."""
        return self._weights.network

    def shares_weights_with(self, other: "VideoModel") -> bool:
        return self._weights is other._weights

    def pairs_with(self, other: "VideoModel") -> bool:
        return (other.family is self.family and other.latent_format == self.latent_format
                and self.family.pairs_with(self.config, other.config))

    # -- making variants -----------------------------------------------------------------------
    def clone(self) -> "VideoModel":
        return VideoModel(self._weights, self.patches)

    def with_patch(self, patch: ModelPatch) -> "VideoModel":
        """A new model object with ``patch`` added; this one stays as it was."""
        return VideoModel(self._weights, self.patches + (patch,))

    # -- running -------------------------------------------------------------------------------
    @property
    def active_placement(self) -> Placement:
        """Where the weights go while this model object runs (a patch may choose)."""
        base = chosen = self._weights.placement
        for patch in self.patches:
            chosen = patch.placement(self, base) or chosen
        return chosen

    def run(self, run: RunInfo | None = None) -> Velocity:
        """The velocity call for one sampling run: ``velocity(x, sigma, inputs) -> v``.

        Each call puts the weights on the compute device (the placement may have offloaded
        them, e.g. to run the other A14B expert) with this object's patches applied. The
        caller ends the run with ``run.finish()``.
        """
        run = run if run is not None else RunInfo()
        placement = self.active_placement

        def velocity(x: torch.Tensor, sigma: float, inputs: ModelInputs) -> torch.Tensor:
            # A sibling branch may have placed the same network differently (streamed, or
            # whole): hand it over through the previous placement first.
            self._weights.placement_in_use(placement)
            with placement.use() as network:
                self._weights.apply(self.patches, self)
                return self.family.velocity(network, self.config, x, sigma, inputs,
                                            compute_dtype=self.compute_dtype, run=run)

        for patch in self.patches:
            velocity = patch.wrap_velocity(velocity, self, run)
        return velocity

    def offload(self) -> None:
        self._weights.offload()

    def restore_weights(self) -> None:
        """Undo any patch merged into the shared weights (they are re-applied on next use)."""
        self._weights.restore()

    def __repr__(self) -> str:
        patches = ", ".join(p.describe() for p in self.patches) or "no patches"
        return f"<VideoModel {self.file_name} ({self.variant}; {patches})>"
