"""CPU offloading: keep weights in (pinned) host memory and put them on the GPU only while they compute.

* :attr:`Offload.MODEL`: each stage (text encoder, transformer, upsampler, VAE) is on the GPU only inside
  :func:`on_device`; its host copy stays the master, so leaving the block costs no device-to-host copy.
* :attr:`Offload.SEQUENTIAL`: :func:`enable_sequential_offload` leaves the small parts of a model on the
  GPU and streams its repeated blocks (transformer blocks, VAE decoder up-blocks) one at a time, the next
  block's weights copied on a side CUDA stream while the current one computes.

Both swap tensors in the modules' ``_parameters`` / ``_buffers`` slots and put the original objects back
afterwards, so the module, its parameter objects and their host storage are the same before and after.
The computation itself is untouched: outputs are bit-identical to running without offload on the same
device. Weights are treated as read-only while on the GPU (inference only): changes made there are lost.
"""

from __future__ import annotations

import enum
import gc
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn


class Offload(str, enum.Enum):
    NONE = "none"
    MODEL = "model"
    SEQUENTIAL = "sequential"


class OffloadIgnoredWarning(UserWarning):
    """Offload asked for on the CPU, where it frees nothing (:func:`cpu_offload_note`)."""


def cpu_offload_note(option: str) -> str:
    """What offload (named as the caller gave it: ``--offload model``, ``offload='model'``) does on the CPU:
    host and device memory are one there, so moving weights between them frees nothing."""
    return f"{option} saves no memory on the CPU (host and device memory are the same): it helps only on a GPU"


# (owning module, "_parameters" | "_buffers", attribute name, tensor)
_Slot = tuple[nn.Module, str, str, Tensor]


def _device(device: torch.device | str) -> torch.device:
    """``cuda`` -> ``cuda:<current>``, so it compares equal to the devices tensors report."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _slots(module: nn.Module, exclude: Sequence[nn.Module] = ()) -> list[_Slot]:
    """Every parameter and buffer slot under ``module`` (shared tensors once per owner), skipping the
    subtrees rooted at ``exclude``."""
    skip = {id(m) for ex in exclude for m in ex.modules()}
    out: list[_Slot] = []
    for m in module.modules():
        if id(m) in skip:
            continue
        for kind in ("_parameters", "_buffers"):
            for name, t in getattr(m, kind).items():
                if t is not None:
                    out.append((m, kind, name, t))
    return out


def _copy_to(t: Tensor, device: torch.device, non_blocking: bool) -> Tensor:
    """``t`` on ``device`` as the same kind of object (a Parameter stays a Parameter)."""
    # Outside inference mode, so the copy is an ordinary tensor usable inside and outside it.
    with torch.inference_mode(False), torch.no_grad():
        data = t.detach().to(device, non_blocking=non_blocking and t.device.type == "cpu" and t.is_pinned())
        if isinstance(t, nn.Parameter):
            return nn.Parameter(data, requires_grad=t.requires_grad)
        return data


def _install(slots: Sequence[_Slot], tensors: Sequence[Tensor]) -> None:
    for (owner, kind, name, _), t in zip(slots, tensors, strict=True):
        getattr(owner, kind)[name] = t


def _restore(slots: Sequence[_Slot]) -> None:
    for owner, kind, name, t in slots:
        getattr(owner, kind)[name] = t


def _copies(slots: Sequence[_Slot], device: torch.device, non_blocking: bool) -> list[Tensor]:
    done: dict[int, Tensor] = {}
    out = []
    for _, _, _, t in slots:
        if t.device == device:
            out.append(t)
            continue
        if id(t) not in done:
            done[id(t)] = _copy_to(t, device, non_blocking)
        out.append(done[id(t)])
    return out


def pin_module(module: nn.Module) -> nn.Module:
    """Move ``module``'s host tensors into page-locked memory (no-op without CUDA); returns ``module``.

    Pinned sources make host-to-GPU copies asynchronous and about twice as fast. Call it once, outside
    the generation loop, after loading the weights on the CPU.
    """
    if not torch.cuda.is_available():
        return module
    seen: dict[int, Tensor] = {}
    with torch.inference_mode(False), torch.no_grad():
        for owner, kind, name, t in _slots(module):
            if t.device.type != "cpu" or t.is_pinned():
                continue
            if id(t) not in seen:
                pinned = t.detach().pin_memory()
                if isinstance(t, nn.Parameter):
                    pinned = nn.Parameter(pinned, requires_grad=t.requires_grad)
                seen[id(t)] = pinned
            getattr(owner, kind)[name] = seen[id(t)]
    return module


@contextmanager
def on_device(
    module: nn.Module, device: torch.device | str, *, non_blocking: bool = True
) -> Iterator[nn.Module]:
    """Inside the block ``module`` computes on ``device``; afterwards its original tensors are back.

    Tensors already on ``device`` are left alone, so this is a no-op for a module that lives there.
    The device copies are released on exit (no copy back: the host tensors are the masters).
    """
    dev = _device(device)
    slots = _slots(module)
    _install(slots, _copies(slots, dev, non_blocking))
    try:
        yield module
    finally:
        _restore(slots)


def stage(
    module: nn.Module | None, device: torch.device | str, offload: Offload | str, *, streamed: bool = False
) -> AbstractContextManager[Any]:
    """The context a pipeline stage runs in: with offload, :func:`on_device` (its weights are on the device only
    while it runs); without, nothing.

    ``streamed`` modules (the transformer and the VAE decoder) stream their blocks themselves under
    ``sequential`` offload (forward hooks, :func:`enable_sequential_offload`), so there they need no stage.
    """
    mode = Offload(offload)
    if module is None or mode is Offload.NONE or (streamed and mode is Offload.SEQUENTIAL):
        return nullcontext(module)
    return on_device(module, device)


class SequentialOffload:
    """Forward hooks that stream ``blocks`` from the host to ``device`` one block at a time.

    Before block i runs, its weights are installed on ``device`` (copied now, or taken from a prefetch);
    with CUDA and ``prefetch`` the copy of block i+1 (wrapping around to block 0 for the next call)
    starts on a side stream at once, overlapping block i's compute. After block i, its device copies are
    dropped and the host tensors put back. ``loads`` / ``releases`` count the hook calls.
    """

    def __init__(
        self, blocks: Sequence[nn.Module], device: torch.device | str, *, prefetch: bool = True
    ) -> None:
        self.device = _device(device)
        self.blocks = list(blocks)
        self.loads = 0
        self.releases = 0
        self._slots = [_slots(b) for b in self.blocks]
        use_cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if use_cuda and prefetch else None
        self._staged: dict[int, tuple[list[Tensor], Any]] = {}
        self._handles = []
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(self._make_pre(i)))
            self._handles.append(block.register_forward_hook(self._make_post(i), always_call=True))

    def _stage_copy(self, i: int) -> None:
        """Start copying block i to the device on the side stream."""
        assert self._stream is not None
        with torch.cuda.stream(self._stream):
            tensors = _copies(self._slots[i], self.device, non_blocking=True)
            event = self._stream.record_event()
        self._staged[i] = (tensors, event)

    def _make_pre(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            self.loads += 1
            staged = self._staged.pop(i, None)
            if staged is None:
                tensors = _copies(self._slots[i], self.device, non_blocking=True)
            else:
                tensors, event = staged
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for t in tensors:
                    if t.device == self.device:
                        # Allocated on the side stream, used on this one: keep the memory until it is done.
                        t.record_stream(current)
            _install(self._slots[i], tensors)
            if self._stream is not None:
                nxt = (i + 1) % len(self.blocks)
                if nxt not in self._staged and nxt != i:
                    self._stage_copy(nxt)

        return hook

    def _make_post(self, i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.releases += 1
            _restore(self._slots[i])

        return hook

    def remove(self) -> None:
        """Remove the hooks and drop staged copies; the blocks keep their host tensors."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._staged.clear()
        for slots in self._slots:
            _restore(slots)


def _default_blocks(model: nn.Module) -> nn.ModuleList:
    for name in ("transformer_blocks", "up_blocks"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"{type(model).__name__} has no transformer_blocks or up_blocks: pass blocks=")


def enable_sequential_offload(
    model: nn.Module,
    device: torch.device | str,
    *,
    blocks: Sequence[nn.Module] | None = None,
    prefetch: bool = True,
) -> SequentialOffload:
    """Block-by-block offload of ``model`` (an ``LTXVideoTransformer`` or a VAE ``Decoder`` by default).

    Load ``model`` on the CPU (blocks found elsewhere are copied to host memory first). Everything outside
    ``blocks`` (embeddings, projections, conv_in/out: a small fraction of the weights) is moved to
    ``device`` for good; the blocks are pinned (with CUDA) and streamed by :class:`SequentialOffload`
    hooks. On a CPU-only machine with ``device="cpu"`` nothing moves, but the hooks still run. Undo with
    ``.remove()`` (the non-block parts stay on ``device``).
    """
    dev = _device(device)
    block_list = list(_default_blocks(model) if blocks is None else blocks)
    rest = _slots(model, exclude=block_list)
    _install(rest, _copies(rest, dev, non_blocking=False))
    for block in block_list:
        # The host copies are the masters the hooks stream from (pinned for asynchronous copies).
        slots = _slots(block)
        _install(slots, _copies(slots, torch.device("cpu"), non_blocking=False))
        pin_module(block)
    return SequentialOffload(block_list, dev, prefetch=prefetch)


def free_module(module: nn.Module) -> None:
    """Release ``module``'s weights (moved to the meta device) and return cached GPU memory.

    The module keeps its structure but can no longer compute: load it again to reuse it.
    """
    with torch.inference_mode(False), torch.no_grad():
        module.to("meta")
    release_memory()


def free_text_encoder(text_encoder: Any) -> None:
    """Free a :class:`ltxcli.text.TextEncoder` (its ``.model``) or a plain module after encoding."""
    free_module(text_encoder.model if hasattr(text_encoder, "model") else text_encoder)


def is_freed(module: Any) -> bool:
    """True when ``module`` (or a TextEncoder's ``.model``) was released by :func:`free_module`."""
    module = module.model if hasattr(module, "model") else module
    return any(t.device.type == "meta" for t in module.parameters())


def release_memory() -> None:
    """Collect garbage and return the CUDA caching allocator's unused blocks to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "Offload", "OffloadIgnoredWarning", "SequentialOffload", "cpu_offload_note", "enable_sequential_offload", "free_module", "free_text_encoder", "is_freed",
    "on_device", "pin_module", "release_memory", "stage",
]
