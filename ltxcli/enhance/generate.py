"""The official enhancer's computation on loaded models (``generate_cinematic_prompt`` step by step).

* :func:`first_frame`: the official ``tensor_to_pil`` of frame 0 of the (preprocessed) condition;
* :func:`caption`: Florence-2 ``<DETAILED_CAPTION>`` with 3 beams, greedy, at most 1024 new tokens;
* :func:`rewrite`: the system prompt and ``user_prompt: ...`` (plus ``\\nimage_caption: ...`` for i2v) through the
  tokenizer's chat template, ``generate(max_new_tokens=256)`` with the model's own generation config (for
  Llama-3.2-3B-Instruct: sampling at its temperature and top-p), the new tokens decoded without special tokens.

transformers' ``generate`` samples from the default generator of the model's device (``torch.multinomial`` without
a generator), so :func:`seeded` runs it under ``torch.random.fork_rng`` seeded with the run's seed: the caller's
global RNG state is restored afterwards and the same seed gives the same prompt (what the official code gives
after ``torch.manual_seed(seed)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .rules import (
    CAPTION_MAX_NEW_TOKENS,
    CAPTION_NUM_BEAMS,
    CAPTION_TASK,
    I2V_CINEMATIC_PROMPT,
    MAX_NEW_TOKENS,
    T2V_CINEMATIC_PROMPT,
)


@contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    """Global RNG of the CPU (and of ``device`` when it is a GPU) seeded with ``seed`` inside, restored after."""
    dev = torch.device(device)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # seeds the CPU and every CUDA device, as the official caller's manual_seed does
        yield


def first_frame(pixels: Tensor) -> Any:  # -> PIL.Image.Image
    """Condition pixels ``[1, 3, n, H, W]`` (or ``[3, n, H, W]``) in [-1, 1] -> frame 0 as a PIL RGB image, as the
    official ``tensor_to_pil`` converts it (``((x + 1) / 2 * 255).astype(uint8)``: truncation, not rounding)."""
    from PIL import Image

    frame = pixels[0] if pixels.ndim == 5 else pixels  # [3, n, H, W]
    x = frame[:, 0].float().cpu()  # [3, H, W]
    x = ((x + 1) / 2).permute(1, 2, 0)  # [H, W, 3] in [0, 1]
    return Image.fromarray((x.numpy() * 255).astype("uint8"))


def caption(model: Any, processor: Any, images: Sequence[Any]) -> list[str]:
    """Florence-2 detailed captions of ``images`` (PIL), decoded without special tokens."""
    # The remote-code processor took (text, images) positionally; the native one takes them by keyword.
    inputs = processor(text=[CAPTION_TASK] * len(images), images=list(images), return_tensors="pt").to(model.device)
    with torch.inference_mode():
        ids = model.generate(
            input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"].to(model.dtype),
            max_new_tokens=CAPTION_MAX_NEW_TOKENS, do_sample=False, num_beams=CAPTION_NUM_BEAMS,
        )
    return list(processor.batch_decode(ids, skip_special_tokens=True))


def messages(prompt: str, image_caption: str | None) -> list[dict[str, str]]:
    """The official chat: the t2v or i2v system prompt, then the user turn."""
    if image_caption is None:
        return [{"role": "system", "content": T2V_CINEMATIC_PROMPT}, {"role": "user", "content": f"user_prompt: {prompt}"}]
    return [
        {"role": "system", "content": I2V_CINEMATIC_PROMPT},
        {"role": "user", "content": f"user_prompt: {prompt}\nimage_caption: {image_caption}"},
    ]


def rewrite_ids(
    model: Any, tokenizer: Any, prompt: str, image_caption: str | None = None, *, max_new_tokens: int = MAX_NEW_TOKENS
) -> Tensor:
    """The generated token ids ``[n]`` (without the input) of the official rewrite of one prompt; sampling draws
    from the global RNG (run it under :func:`seeded`)."""
    text = tokenizer.apply_chat_template(messages(prompt, image_caption), tokenize=False, add_generation_prompt=True)
    # as the official call: the chat text tokenized again with the tokenizer's own special tokens
    inputs = tokenizer([text], return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens)
    return out[0, inputs["input_ids"].shape[1]:]


def decode(tokenizer: Any, ids: Tensor) -> str:
    """The official post-processing: the new tokens decoded without special tokens, nothing stripped."""
    return str(tokenizer.batch_decode([ids], skip_special_tokens=True)[0])


__all__ = ["caption", "decode", "first_frame", "messages", "rewrite_ids", "seeded"]
