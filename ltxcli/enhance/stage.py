"""The enhancement stage of a run: for each request whose plan says so, the enhanced prompt, computed before the
text encoder runs, with the enhancer's models freed afterwards (so none is resident while the transformer
denoises).

``ltx generate`` runs it for every item before the video model is loaded (:func:`enhance_items`);
:meth:`ltxcli.pipeline.Pipeline.run` runs it for a request that arrives without its enhanced prompt
(:meth:`ltxcli.enhance.enhancer.PromptEnhancer.enhance_resolved`). Either way: ``auto`` with models that
cannot be had (offline and not on disk) falls back to the original prompt with one warning; ``on`` raises
(:class:`ltxcli.weights.WeightsUnavailableError`, exit 3, naming what to pull). Importing this module imports no torch (the CLI imports it at its top).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..paths import user_media, user_path
from .rules import per_window, request_plan

if TYPE_CHECKING:
    from torch import Tensor

    from ltxcli.extend import InputFrames
    from ltxcli.presets import Preset
    from ltxcli.request import GenerationRequest

    from .enhancer import PromptEnhancer


def enhancer_for(preset: Preset, *, llm: str | None = None, captioner: str | None = None, **kwargs: Any
                 ) -> PromptEnhancer:
    """The preset's enhancer models (``llm`` / ``captioner`` replace them), as a :class:`PromptEnhancer`."""
    from .enhancer import PromptEnhancer

    return PromptEnhancer(llm or preset.prompt_enhancer_llm, captioner or preset.prompt_enhancer_captioner, **kwargs)


#: Weights of the registry enhancer models (their safetensors files on the Hub) for the memory plan before they are
#: downloaded; once on disk their headers are read instead.
NOMINAL_BYTES = {"llama-3.2-3b-instruct": 6_425_000_000, "florence-2-large-promptgen-v2.0": 3_290_000_000}


def _source_bytes(source: str, kind: str, dtype: Any, weights_dir: Any) -> int:
    from ltxcli import weights
    from ltxcli.memory.weights import folder_bytes

    if source == "tiny":
        return 0  # a few hundred kB
    reg = weights.load_registry()
    if source in reg:
        folder = weights.path(source, weights_dir=weights_dir)
        if folder is not None:
            return folder_bytes(folder, dtype)
        # offline and not on disk the stage cannot run (auto keeps the prompt, on exits 3 naming what to pull)
        return 0 if weights.is_offline() else NOMINAL_BYTES.get(source, 0)
    from pathlib import Path

    from .enhancer import check_folder

    folder = Path(user_path(source))
    check_folder(folder, "--enhancer-model" if kind == "enhancer" else "--caption-model")
    return folder_bytes(folder, dtype)


def enhancer_bytes(request: GenerationRequest, preset: Preset, *, llm: str | None = None, captioner: str | None = None,
                   weights_dir: Any = None, max_seconds: float | None = None) -> int:
    """The weights the enhancement stage of ``request`` holds (0 when its prompt is not rewritten): the LLM in
    bfloat16, plus the captioner in float32 for image-to-video (the official precisions). A registry model not
    on disk counts its :data:`NOMINAL_BYTES` (0 offline, where it cannot be had and the stage does not run)."""
    from .enhancer import CAPTIONER_DTYPE, LLM_DTYPE

    kinds = _rewrites(request, preset, max_seconds)
    if not kinds:
        return 0
    total = _source_bytes(llm or preset.prompt_enhancer_llm, "enhancer", LLM_DTYPE, weights_dir)
    if "i2v" in kinds:
        total += _source_bytes(captioner or preset.prompt_enhancer_captioner, "captioner", CAPTIONER_DTYPE, weights_dir)
    return total


def _rewrites(request: GenerationRequest, preset: Preset, max_seconds: float | None) -> set[str]:
    """The kinds (``"t2v"``, ``"i2v"``) of the rewrites the stage makes for ``request`` (none: an empty set)."""
    return {p.kind for u in prompt_units(request, preset, max_seconds, pixels=False) if u.enhanced_prompt is None
            and (p := request_plan(u, preset)).kind is not None}


def unused_models(requests: Sequence[GenerationRequest], preset: Preset, *, llm: str | None = None,
                  captioner: str | None = None, max_seconds: float | None = None) -> list[str]:
    """Of ``llm`` and ``captioner`` (``--enhancer-model``, ``--caption-model``), the warnings for those given that no
    rewrite of ``requests`` uses: the LLM where no prompt is rewritten, the captioner where none of an
    image-to-video is (it captions their first frame)."""
    kinds = set().union(*(_rewrites(r, preset, max_seconds) for r in requests))
    unused = []
    if llm is not None and not kinds:
        unused.append("--enhancer-model is ignored: no prompt is rewritten (see --enhance-prompt)")
    if captioner is not None and "i2v" not in kinds:
        unused.append("--caption-model is ignored: no image-to-video prompt is rewritten (it captions their first "
                      "frame)")
    return unused


def first_frame_pixels(request: GenerationRequest, preset: Preset) -> Tensor:
    """:func:`ltxcli.conditions.first_frame_pixels` (what the captioner reads; this module imports no torch)."""
    from ltxcli.conditions import first_frame_pixels as pixels

    return pixels(request, preset)


def prompt_units(request: GenerationRequest, preset: Preset, max_seconds: float | None = None, *,
                 inputs: InputFrames | None = None, pixels: bool = True) -> list[GenerationRequest]:
    """What the stage rewrites for ``request``, each as one prompt: the request itself, or for per-window prompts
    each distinct window prompt as the first window that takes it runs it, under the request's seed
    (:meth:`ltxcli.long_video.LongPlan.prompt_requests`; its rewrite, when ``enhanced_prompt`` maps it, set); an
    extension's as :func:`ltxcli.extend.enhancement_units` (``max_seconds``: the model's time range; ``inputs``,
    ``pixels``: its)."""
    if request.extend is not None:
        from ltxcli.extend import enhancement_units

        return enhancement_units(request, preset, max_seconds, inputs=inputs, pixels=pixels)
    if not per_window(request):
        return [request]
    from ltxcli.long_plan import plan

    p = plan(request, preset)
    assert p is not None  # per-window prompts always make windows
    return p.prompt_requests()


def enhance_requests(
    requests: Sequence[GenerationRequest], preset: Preset, enhancer: PromptEnhancer, *,
    warn: Callable[[str], None], on_enhanced: Callable[[GenerationRequest], None] | None = None,
    download: Callable[[list[str]], None] | None = None, max_seconds: float | None = None,
    inputs: InputFrames | None = None,
) -> None:
    """Set ``enhanced_prompt`` on every request whose plan enhances it (each request needs its ``seed``), with one
    load of the enhancer's models, freed at the end: per-window prompts map each window prompt rewritten to its
    rewrite (:func:`prompt_units`). ``download``: pulls the registry models it is given (the CLI's, with progress
    bars) before they are checked. ``on_enhanced``: called once a request's rewrites are all made. ``max_seconds``:
    the model's time range (an extension's windows); ``inputs``: the run's decoded extension inputs (read once,
    for the stage and the run)."""
    todo = [(r, u, p) for r in requests for u in prompt_units(r, preset, max_seconds, inputs=inputs)
            if u.enhanced_prompt is None and (p := request_plan(u, preset)).kind]
    if not todo:
        return
    if any(u.seed is None for _, u, _ in todo):
        raise ValueError("prompt enhancement samples under the run's seed: give every request a seed first")
    image = any(p.kind == "i2v" for *_, p in todo)
    if not enhancer.available(image, [u.enhance_prompt for _, u, _ in todo], warn, download):
        return
    with enhancer:
        for i, (r, u, p) in enumerate(todo):
            pixels = first_frame_pixels(u, preset) if p.kind == "i2v" else None
            assert u.seed is not None
            text = enhancer.enhance(u.prompt, seed=u.seed, image=pixels)
            mapped = r.enhanced_prompt if isinstance(r.enhanced_prompt, Mapping) else {}
            r.enhanced_prompt = {**mapped, u.prompt: text} if per_window(r) else text  # per-window: by window prompt
            if on_enhanced is not None and (i + 1 == len(todo) or todo[i + 1][0] is not r):
                on_enhanced(r)


def enhance_items(
    requests: Sequence[GenerationRequest], preset: Preset, *, llm: str | None = None, captioner: str | None = None,
    device: Any = "cpu", weights_dir: Any = None, warn: Callable[[str], None], info: Callable[[str], None],
    download: Callable[[list[str]], None] | None = None, max_seconds: float | None = None,
    inputs: InputFrames | None = None,
) -> None:
    """The stage as ``ltx generate`` / ``ltx prompt`` run it, before the video model is loaded: the preset's enhancer
    (or ``llm`` / ``captioner``) on ``device``, each enhanced prompt reported through ``info``; ``max_seconds``: the
    model's time range (an extension's windows); ``inputs``: :func:`enhance_requests`'."""
    enhancer = enhancer_for(preset, llm=llm, captioner=captioner, device=device, weights_dir=weights_dir,
                            download=download is None)

    def report(r: GenerationRequest) -> None:
        where = f" [{getattr(r, 'index', 0) + 1}]" if len(requests) > 1 else ""
        if not isinstance(r.enhanced_prompt, Mapping):
            info(f"enhanced prompt{where}: {r.enhanced_prompt}")
            return
        for prompt, text in r.enhanced_prompt.items():  # per-window prompts: each rewrite after its window prompt
            info(f"enhanced prompt{where} ({prompt}): {text}")

    enhance_requests(requests, preset, enhancer, warn=warn, on_enhanced=report, download=download,
                     max_seconds=max_seconds, inputs=inputs)


def enhance_prompt(
    prompt: str, preset: Preset, *, image: Any = None, extend: Any = None, backward: bool = False,
    seed: int | None = None, device: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """``ltx prompt``: the rewrite ``ltx generate --enhance-prompt on`` makes of ``prompt`` under ``preset`` (at its
    size for ``image``, the first frame) -> ``{"prompt", "enhanced_prompt", "seed", "image", "extend"}``.
    ``extend`` (a video's path): the rewrite ``ltx extend VIDEO PROMPT [--backward] --enhance-prompt on`` makes
    (:func:`ltxcli.extend.enhancement_units`: image-to-video of the frame the new frames continue from, forward
    VIDEO's last, ``backward`` its first, at the output size ltx extend takes from VIDEO; how many new frames
    changes nothing of it); ``"extend"`` is then ``{"video", "backward"}``. ``kwargs``: those of
    :func:`enhance_items` (``warn`` is required). One prompt: per-window prompts are a ValueError (each window
    prompt is rewritten alone, which ``ltx prompt PART`` shows)."""
    import secrets

    if "|" in prompt:  # which parts a video uses, and which window takes the image, depend on its windows
        raise ValueError("ltx prompt rewrites one prompt: give the parts of 'a | b' one at a time (ltx generate "
                         "rewrites each window prompt alone, under the same seed; --image goes with the first)")
    if extend is not None and image is not None:  # an extension's image is its own frame
        raise ValueError("give --image (image-to-video) or --extend (an extension of that video), not both")
    if backward and extend is None:
        raise ValueError("--backward goes with --extend VIDEO (an extension before the video's start)")

    from ltxcli.api import resolve_device
    from ltxcli.extend import InputFrames
    from ltxcli.request import Condition, Extension, GenerationRequest, check_fields
    from ltxcli.source import source_defaults

    seed = secrets.randbelow(2**31) if seed is None else seed
    image, extend = user_media(image), user_media(extend)  # `--image=~/a.png`: no shell expanded it
    # an extension by one frame: the unit rewritten is the same for any number (the captioned frame, its size)
    ext = None if extend is None else Extension(extend, 1, backward)
    r = check_fields(GenerationRequest(prompt, conditions=[Condition(image, 0)] if image is not None else [],
                                       seed=seed, enhance_prompt="on", extend=ext))
    # the video decoded once, as ltx extend's run reads it: its size and rate, the checks (a truncated file's rate
    # by the frames that decode, not the packets' times) and the captioned frame (an unreadable one: MediaError)
    inputs = None if ext is None else InputFrames()
    if ext is not None:
        source_defaults(r, preset, inputs)
    else:  # a text-to-video rewrite captions nothing (an extension's its frame): said, as ltx generate does
        for message in unused_models([r], preset, captioner=kwargs.get("captioner")):
            kwargs["warn"](message)
    enhance_items([r], preset, device=resolve_device(device), info=lambda _: None, inputs=inputs, **kwargs)
    return {"prompt": prompt, "enhanced_prompt": r.enhanced_prompt, "seed": seed, "image": image,
            "extend": None if ext is None else {"video": ext.record()["video"], "backward": backward}}


__all__ = [
    "NOMINAL_BYTES", "enhance_items", "enhance_prompt", "enhance_requests", "enhancer_bytes", "enhancer_for",
    "first_frame_pixels", "prompt_units", "unused_models",
]
