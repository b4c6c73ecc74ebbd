"""Speed options of a sampling run: the attention kernel, compiled blocks, text K/V reuse.

They are forward options (``RunInfo.options``): the VideoDiT Speed Options node adds a
:class:`SpeedOptions` patch that writes them into every run of its model, and the family's
velocity call reads them through :func:`forward_options`. None of them changes what the model
computes, only how fast (up to rounding: compiled blocks fuse operations differently, and
SageAttention rounds q and k to int8, a small change).

* ``attention``: ``auto`` | ``sdpa`` | ``flash`` | ``sage`` (``networks/attention.py``). A
  name other than ``auto`` set on the run wins; otherwise the environment variable
  ``VIDEODIT_ATTENTION`` decides, else ``auto``. A kernel that cannot run here falls back to
  SDPA with one log line per run.
* ``compile``: run each transformer block through ``torch.compile`` (off by default: the first
  steps pay the compile time, minutes for a large model, and it needs a working compiler
  toolchain). The compiled callables live in :data:`BLOCK_COMPILER`, keyed by block, outside
  the network: compiling never changes the shared network, which other branches of a graph
  run uncompiled.
* ``text_kv_cache``: reuse each block's cross-attention keys and values of the text between
  the steps of a run (on by default; ``families/wan.py``). Costs device memory: per prompt
  and batch item ``2 x blocks x 512 x dim`` values (Wan 14B in bf16: 0.4 GB; 1.3B: 94 MB;
  +50% with the 257 CLIP image tokens of I2V). No node sets it; a memory plan may turn it
  off.
"""
from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..core.run_info import RunInfo
from ..networks.attention import BACKENDS, ENVIRONMENT_VARIABLE, Attention, check_name, choose
from .model import ModelPatch, Velocity, VideoModel

log = logging.getLogger("comfyui_videodit")

ATTENTION = "attention"
COMPILE = "compile"
STREAMED_BLOCKS = "streamed_blocks"   # set by block swap: the blocks' weights move per call
_STREAMED_NOTED = "compile_off_for_streaming_noted"
TEXT_KV_CACHE = "text_kv_cache"
ATTENTION_CHOICES = BACKENDS

_ATTENTION_STATE = "speed.attention"        # run.state: the kernel chosen for this run
_WARNED_STATE = "speed.attention_warned"    # run.state: fallbacks already logged
_WARNED_WITHOUT_RUN: set[tuple[str, str]] = set()


class SpeedOptions(ModelPatch):
    """Sets a model's forward options for every sampling run it is used in."""

    name = "speed options"

    def __init__(self, attention: str = "auto", compile_blocks: bool = False):
        self.attention = check_name(attention)
        self.compile_blocks = bool(compile_blocks)

    def wrap_velocity(self, velocity: Velocity, model: VideoModel, run: RunInfo) -> Velocity:
        run.options[ATTENTION] = self.attention
        run.options[COMPILE] = self.compile_blocks
        return velocity

    def describe(self) -> str:
        compiled = ", compiled blocks" if self.compile_blocks else ""
        return f"speed options (attention {self.attention}{compiled})"


def requested_attention(options: dict[str, Any]) -> str:
    """The kernel asked for: the run's option unless it is ``auto``, then the environment."""
    name = check_name(options.get(ATTENTION, "auto"))
    if name != "auto":
        return name
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if from_environment:
        return check_name(from_environment, source=f"the environment variable "
                                                   f"{ENVIRONMENT_VARIABLE}")
    return "auto"


def attention_for(run: RunInfo | None, device: torch.device, dtype: torch.dtype,
                  head_dim: int) -> Attention:
    """The attention kernel for this run (chosen once per run; a fallback is logged once)."""
    options = run.options if run is not None else {}
    key = (requested_attention(options), torch.device(device), dtype, head_dim)
    chosen = run.state.get(_ATTENTION_STATE) if run is not None else None
    if chosen is not None and chosen[0] == key:
        return chosen[1]
    choice = choose(key[0], device, dtype, head_dim)
    if choice.fallback_reason is not None:
        _warn_once(run, key[0], choice.fallback_reason)
    if run is not None:
        run.state[_ATTENTION_STATE] = (key, choice.function)
    return choice.function


def _warn_once(run: RunInfo | None, requested: str, reason: str) -> None:
    """One log line per run (per process for calls made without a run)."""
    warned = (run.state.setdefault(_WARNED_STATE, set()) if run is not None
              else _WARNED_WITHOUT_RUN)
    if (requested, reason) in warned:
        return
    warned.add((requested, reason))
    where = f" for the {run.label}" if run is not None else ""
    log.warning("%s attention is not available%s (%s); using PyTorch SDPA", requested, where,
                reason)


def reuse_text_kv(run: RunInfo | None) -> bool:
    return run is not None and bool(run.options.get(TEXT_KV_CACHE, True))


class BlockCompiler:
    """Compiled stand-ins for transformer blocks, kept outside the network.

    One compiled function runs any block (the block is its argument, so blocks of the same
    shape share one compilation); per block the cache holds a small callable that refers to
    its block weakly, keyed by the block itself, so nothing here keeps an unloaded model alive
    and nothing is set on the modules. ``compile_fn`` is ``torch.compile`` unless a test gives
    another.
    """

    def __init__(self, compile_fn: Callable[[Callable], Callable] | None = None):
        self._compile_fn = compile_fn
        self._compiled: Callable | None = None
        self._per_block: weakref.WeakKeyDictionary[nn.Module, Callable] = \
            weakref.WeakKeyDictionary()

    def __call__(self, blocks: Sequence[nn.Module]) -> list[Callable]:
        return [self._callable(block) for block in blocks]

    def _callable(self, block: nn.Module) -> Callable:
        found = self._per_block.get(block)
        if found is None:
            if self._compiled is None:
                compile_fn = self._compile_fn or torch.compile
                self._compiled = compile_fn(_run_block)
            compiled, block_ref = self._compiled, weakref.ref(block)

            def found(*args):
                return compiled(block_ref(), *args)

            self._per_block[block] = found
        return found


def _run_block(block: nn.Module, *args):
    # Through the module's __call__, so hooks on the block (block streaming) still run.
    return block(*args)


BLOCK_COMPILER = BlockCompiler()


def forward_options(run: RunInfo | None, blocks: Sequence[nn.Module], device: torch.device,
                    dtype: torch.dtype, head_dim: int) -> dict[str, Any]:
    """Keyword arguments for the network's forward: ``attention`` and, when the run asks for
    compiled blocks, ``block_calls``."""
    arguments: dict[str, Any] = {"attention": attention_for(run, device, dtype, head_dim)}
    if run is not None and run.options.get(COMPILE, False):
        if run.options.get(STREAMED_BLOCKS, False):
            # Block swap moves each block's weights in forward hooks; a compiled graph would
            # trace those moves (or break on them), so streamed blocks run uncompiled.
            if not run.state.get(_STREAMED_NOTED):
                run.state[_STREAMED_NOTED] = True
                log.warning("compiled blocks are off for the %s: its blocks are streamed by "
                            "VideoDiT Block Swap", run.label)
        else:
            arguments["block_calls"] = BLOCK_COMPILER(blocks)
    return arguments
