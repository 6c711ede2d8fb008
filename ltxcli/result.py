"""What a generation returns (:class:`GenerationResult`): the video or its pending streamed decode, the latents, the
seed, the timings and the generation record."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .formatting import brief
from .frames import checked_uint8
from .media.write import Quantize
from .memory.decode import STREAM_CHUNK_FRAMES


@dataclass
class GenerationResult:
    """What :meth:`Pipeline.run` (and ``long_video.generate``, ``extend.run_extension``) returns: the decoded
    ``video`` (None when streamed: iterate :meth:`frames`), the final ``latents``, the ``seed`` used (drawn when
    the request had none), ``timings`` in seconds per stage and ``settings``, the generation record (every
    resolved value, the model, conditions, compute and step-cache counts) that :func:`ltxcli.save_video` writes."""

    video: Tensor | None  # float32 [F, H, W, 3] in [0, 1], CPU; None when streamed (run(..., stream=True))
    latents: Tensor  # normalised latents [1, C, f, h, w] after the last step, before decode noise, CPU
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    # the pending decode of a streamed result: (chunk_frames, quantize) -> uint8 chunks; None once started
    _stream: Callable[[int, Quantize], Iterator[Tensor]] | None = field(default=None, repr=False, compare=False)
    # how the VAE decoded it (tiled_decode's keyword arguments; None: whole), set by the decode: a latents file
    # records it, as windows round differently from a whole decode (ltxcli.autoencode.DecodeSettings.plan)
    decode_plan: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # a long video's decode in temporal tiles of its fused latents (ltxcli.long_decode): {"length": latent frames
    # a tile spans less one, "seed": tile decode noise seed less its first latent frame, "plans": each tile's
    # decode_plan}; None: one decode as above (ltxcli.autoencode.DecodeSettings.tiles)
    decode_tiles: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    # an extension's: the decoded frames [start, end) of latents that its video holds (its new frames; the context
    # before or after them is the input's own); None: the first settings["num_frames"] (DecodeSettings.first_frame)
    kept_frames: tuple[int, int] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        video = "None (streamed)" if self.video is None else brief(self.video)
        timings = {k: round(v, 3) for k, v in self.timings.items()}
        return (f"GenerationResult(seed={self.seed}, video={video}, latents={brief(self.latents)}, "
                f"prompt={self.settings.get('prompt')!r}, model={self.settings.get('model')!r}, timings={timings})")

    def frames(self, chunk_frames: int = STREAM_CHUNK_FRAMES, quantize: Quantize = "round") -> Iterator[Tensor]:
        """The video as uint8 ``[n, H, W, 3]`` CPU chunks of at most ``chunk_frames`` frames, in order, checked
        for NaN/Inf (:class:`~ltxcli.frames.NumericalError`), for a writer: ``write_video(path,
        result.frames(), fps)``. A streamed result decodes here, once (its ``timings["decode_s"]`` is set when
        the iterator is exhausted); otherwise ``video`` is converted chunk by chunk."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames={chunk_frames} must be at least 1")
        if self.video is not None:
            return (checked_uint8(self.video[i : i + chunk_frames], quantize)
                    for i in range(0, self.video.shape[0], chunk_frames))
        if self._stream is None:
            raise RuntimeError("the streamed video was already decoded: frames() can be iterated once")
        stream, self._stream = self._stream, None
        return stream(chunk_frames, quantize)


__all__ = ["GenerationResult"]
