"""Strict, memory-mapped reading of ``.safetensors`` files.

The header is parsed and validated here (rather than trusting a library to fail gracefully) so that every
broken or hostile file — truncated, corrupt header, offsets outside the file, unknown dtypes, shapes that
disagree with the byte ranges — becomes one :class:`CheckpointError` line naming the file and the problem.
Tensors are views into a copy-on-write memory map: building a model with ``assign=True`` from them costs no
read until a page is touched, and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

# A real LTX-Video header (13B, ~1,300 tensors, config metadata) is well under 1 MiB; 100 MiB is the limit the
# safetensors format itself sets, beyond which the file is refused rather than parsed.
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the start of the data section
    end: int


class SafetensorsFile:
    """A validated safetensors file: ``metadata``, ``infos`` and lazily memory-mapped tensors."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.metadata: dict[str, str] = {}
        self.infos: dict[str, TensorInfo] = {}
        self._mmap: mmap.mmap | None = None
        self._parse()

    def _fail(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {problem}")

    def _parse(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: file not found") from None
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e.strerror or e})") from None
        if self.path.is_dir():
            raise self._fail("is a folder, not a .safetensors file")
        if size < 8:
            raise self._fail(f"truncated or not a safetensors file ({size} bytes)")
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES or n + 8 > size:
                raise self._fail(
                    f"corrupt safetensors header (declares {n} header bytes in a {size}-byte file)"
                )
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise self._fail("corrupt safetensors header (not valid JSON)") from None
        if not isinstance(header, dict):
            raise self._fail("corrupt safetensors header (not a JSON object)")
        self._data_start = 8 + n
        data_size = size - self._data_start
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise self._fail("corrupt safetensors metadata (must map strings to strings)")
        self.metadata = meta
        for key, entry in header.items():
            if not isinstance(entry, dict) or {"dtype", "shape", "data_offsets"} - entry.keys():
                raise self._fail(f"corrupt header entry for tensor {key!r}")
            dtype = DTYPES.get(entry["dtype"])
            if dtype is None:
                raise self._fail(f"tensor {key!r} has unsupported dtype {entry['dtype']!r}")
            shape, offsets = entry["shape"], entry["data_offsets"]
            if (
                not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and o >= 0 for o in offsets)
            ):
                raise self._fail(f"corrupt header entry for tensor {key!r}")
            begin, end = offsets
            numel = 1
            for d in shape:
                numel *= d
            if end < begin or end - begin != numel * dtype.itemsize:
                raise self._fail(f"tensor {key!r}: byte range {offsets} does not match shape {shape}")
            if end > data_size:
                raise self._fail(
                    f"tensor {key!r} points outside the file (ends at byte {self._data_start + end}, "
                    f"file has {size}): truncated download?"
                )
            self.infos[key] = TensorInfo(dtype, tuple(shape), begin, end)

    def names(self) -> list[str]:
        return list(self.infos)

    def tensor(self, key: str) -> torch.Tensor:
        """The tensor ``key`` as a zero-copy view of a private (copy-on-write) memory map of the file."""
        info = self.infos[key]
        numel = (info.end - info.begin) // info.dtype.itemsize
        if numel == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        if self._mmap is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        offset = self._data_start + info.begin
        if offset % info.dtype.itemsize:
            # Misaligned data (not produced by the reference writers): copy rather than build an unaligned view.
            data = bytearray(self._mmap[offset : offset + info.end - info.begin])
            return torch.frombuffer(data, dtype=info.dtype).reshape(info.shape)
        return torch.frombuffer(self._mmap, dtype=info.dtype, count=numel, offset=offset).reshape(info.shape)

    def config(self) -> dict | None:
        """The JSON in metadata key ``config`` (the official single files' embedded configs), if any."""
        raw = self.metadata.get("config")
        if raw is None:
            return None
        try:
            cfg = json.loads(raw)
        except json.JSONDecodeError:
            raise self._fail("metadata 'config' is not valid JSON") from None
        if not isinstance(cfg, dict):
            raise self._fail("metadata 'config' is not a JSON object")
        return cfg


def save_file(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` in the safetensors format (through the reference writer)."""
    from safetensors.torch import save_file as _save

    _save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
