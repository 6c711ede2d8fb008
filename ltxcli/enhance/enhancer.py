"""The prompt enhancer as a component: which models, where they come from, loading them (safetensors only, native
classes only) and freeing them. :class:`PromptEnhancer` loads on first use and :meth:`PromptEnhancer.free` releases
everything, so a run holds the enhancer only between "enhance" and the T5 stage.

Model sources (``llm`` / ``captioner``): a weights.toml entry (kind ``enhancer`` / ``captioner``, pulled with
progress by the caller or on first use here), ``tiny`` (the built-in random models of :mod:`ltxcli.enhance.tiny`),
or a local folder: for ``llm`` any transformers causal LM with a chat template; for ``captioner`` Florence-2 in the
native or the remote-code layout (:mod:`ltxcli.enhance.florence`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..paths import user_path
from . import generate
from .rules import MAX_NEW_TOKENS, EnhancementSkippedWarning, request_plan

if TYPE_CHECKING:
    from typing import TypeVar

    from ltxcli.presets import Preset
    from ltxcli.request import GenerationRequest, ResolvedRequest

    # a request either side of resolution: a windowed video is enhanced before its windows are resolved
    _Request = TypeVar("_Request", GenerationRequest, ResolvedRequest)

BUILTIN = "tiny"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: The official loading: the LLM in bfloat16 (``torch_dtype="bfloat16"``), Florence-2 in its default float32.
LLM_DTYPE = torch.bfloat16
CAPTIONER_DTYPE = torch.float32


class EnhancerError(ValueError):
    """A model folder the enhancer cannot use (one actionable line; a usage error, exit 2)."""

    exit_code = 2


def check_folder(folder: Path, what: str) -> None:
    """A folder with safetensors weights and a config.json; pickle-only weights are refused (never unpickled)."""
    if not folder.is_dir():
        raise EnhancerError(f"{what} {folder}: no such folder (give a folder with a transformers model, or a "
                            "weights.toml name)")
    files = [p.name for p in folder.iterdir()]
    if not any(n.endswith(".safetensors") for n in files):
        pickles = sorted(n for n in files if n.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise EnhancerError(f"{what} {folder}: only pickle-based weights ({pickles[0]}); ltx loads .safetensors "
                                "only: convert them (e.g. save_pretrained(..., safe_serialization=True))")
        raise EnhancerError(f"{what} {folder}: no .safetensors weights in it")
    if "config.json" not in files:
        raise EnhancerError(f"{what} {folder}: no config.json in it")


def load_llm(folder: Path, device: torch.device, dtype: torch.dtype = LLM_DTYPE, what: str = "--enhancer-model"
             ) -> tuple[Any, Any]:
    """A local instruct model folder -> (model, tokenizer); its tokenizer must have a chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_folder(folder, what)
    from transformers import CONFIG_MAPPING

    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise EnhancerError(f"{what} {folder}: model type {model_type!r} is not one of transformers' own classes "
                            "(ltx never runs a repository's Python code)")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not getattr(tokenizer, "chat_template", None):
        raise EnhancerError(f"{what} {folder}: its tokenizer has no chat template (an instruct model is needed)")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    return model.to(device).eval(), tokenizer


def load_captioner(folder: Path, device: torch.device, dtype: torch.dtype = CAPTIONER_DTYPE,
                   what: str = "--caption-model") -> tuple[Any, Any]:
    """A Florence-2 folder (native or remote-code layout) -> (native model, native processor)."""
    from . import florence

    check_folder(folder, what)
    config = json.loads((folder / "config.json").read_text())
    if florence.is_remote_layout(config):
        try:
            return florence.load_remote_layout(folder, device, dtype)
        except florence.CaptionerLayoutError as e:
            raise EnhancerError(f"{what} {e}") from None
    from transformers import Florence2ForConditionalGeneration, Florence2Processor

    model = Florence2ForConditionalGeneration.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    return model.to(device).eval(), Florence2Processor.from_pretrained(folder)


class PromptEnhancer:
    """The official enhancer (``generate_cinematic_prompt``) on models loaded on first use.

    ``llm`` / ``captioner``: weights.toml names, ``"tiny"`` or folders (see the module docstring). ``download``:
    pull registry models that are not on disk (offline: :class:`ltxcli.weights.WeightsUnavailableError`, exit 3,
    naming what to pull). ``on_event``: receives the pulls' progress events (:func:`ltxcli.spec.ensure_weights`).
    """

    def __init__(
        self, llm: str | os.PathLike[str] = "llama-3.2-3b-instruct",
        captioner: str | os.PathLike[str] = "florence-2-large-promptgen-v2.0", *, device: str | torch.device = "cpu",
        weights_dir: str | os.PathLike[str] | None = None, download: bool = True,
        on_event: Callable[[object], None] | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        self.llm_source = os.fspath(llm)
        self.captioner_source = os.fspath(captioner)
        self.device = torch.device(device)
        self.weights_dir = weights_dir
        self.download = download
        self.on_event = on_event
        self.max_new_tokens = max_new_tokens
        self.llm: tuple[Any, Any] | None = None  # (model, tokenizer)
        self.captioner: tuple[Any, Any] | None = None  # (model, processor)
        self._tiny: tuple[Any, Any, Any, Any] | None = None
        self._given = False
        self._held = 0  # nested ``with`` blocks: the models are freed as the outermost one exits

    @classmethod
    def from_models(cls, llm: tuple[Any, Any], captioner: tuple[Any, Any] | None = None) -> PromptEnhancer:
        """An enhancer over models already loaded: ``(model, tokenizer)`` and ``(Florence-2 model, processor)``
        (kept by :meth:`free`, which only drops references to what it loaded itself)."""
        enh = cls("(given)", "(given)", device=llm[0].device, download=False)
        enh.llm, enh.captioner, enh._given = llm, captioner, True
        return enh

    # --- sources --------------------------------------------------------------------------------------------

    @staticmethod
    def _registry_name(source: str, kind: str) -> str | None:
        from ltxcli import weights

        reg = weights.load_registry()
        if source in reg:
            if reg[source].kind != kind:
                raise EnhancerError(f"{source} is a {reg[source].kind} entry of weights.toml, not a {kind}")
            return source
        return None

    def registry_names(self, image: bool) -> list[str]:
        """The weights.toml entries enhancing a prompt needs (``image``: an i2v request, which also captions)."""
        pairs = [(self.llm, self.llm_source, "enhancer")]
        if image:
            pairs.append((self.captioner, self.captioner_source, "captioner"))
        return [n for loaded, s, kind in pairs
                if loaded is None and s != BUILTIN and (n := self._registry_name(s, kind)) is not None]

    def check_available(self, image: bool) -> None:
        """Raise what loading would raise for a missing model (a folder's problem: :class:`EnhancerError`; a
        registry model not on disk while offline, or with ``download=False``: WeightsUnavailableError), before
        anything is loaded; with ``download`` the missing registry models are pulled here."""
        from ltxcli import weights
        from ltxcli.spec import ensure_weights

        names = self.registry_names(image)
        if self.download:
            ensure_weights(names, weights_dir=self.weights_dir, on_event=self.on_event)
        for n in names:
            weights.resolve(n, weights_dir=self.weights_dir)
        roles = [(self.llm, self.llm_source, "enhancer"), (self.captioner, self.captioner_source, "captioner")]
        for loaded, source, kind in roles[: 2 if image else 1]:
            if loaded is None and source != BUILTIN and self._registry_name(source, kind) is None:
                check_folder(Path(user_path(source)), "--enhancer-model" if kind == "enhancer" else "--caption-model")

    def available(self, image: bool, modes: Sequence[str], warn: Callable[[str], None],
                  download: Callable[[list[str]], None] | None = None) -> bool:
        """:meth:`check_available` (after ``download`` of the registry models, when given) for requests of
        ``modes``: models that cannot be had are one ``warn`` and False when every mode is ``auto``; with an
        ``on`` among them the WeightsUnavailableError is raised."""
        from ltxcli.weights import WeightsUnavailableError

        try:
            if download is not None:
                download(self.registry_names(image))
            self.check_available(image)
        except WeightsUnavailableError as e:
            if "on" in modes:
                raise
            warn(f"prompt enhancement skipped, the original prompt is used: {e}")
            return False
        return True

    def enhance_resolved(self, r: _Request, preset: Preset, seed: int, pixels: torch.Tensor | None) -> _Request:
        """The pipeline's stage: ``r`` with its enhanced prompt (``pixels``: the prepared pixels of its first
        condition), the models freed afterwards; unchanged when its plan does not enhance or it has one. ``auto``
        without the models: one :class:`EnhancementSkippedWarning`."""
        p = request_plan(r, preset)
        if p.kind is None or r.enhanced_prompt is not None:
            return r

        def warn(msg: str) -> None:
            warnings.warn(msg, EnhancementSkippedWarning, stacklevel=4)

        if not self.available(p.kind == "i2v", [r.enhance_prompt], warn):
            return r
        with self:
            text = self.enhance(r.prompt, seed=seed, image=pixels if p.kind == "i2v" else None)
        return dataclasses.replace(r, enhanced_prompt=text)

    def _folder(self, source: str, kind: str) -> Path:
        from ltxcli import weights

        name = self._registry_name(source, kind)
        if name is None:
            return Path(user_path(source))
        if self.download:
            from ltxcli.spec import ensure_weights

            ensure_weights([name], weights_dir=self.weights_dir, on_event=self.on_event)
        return weights.resolve(name, weights_dir=self.weights_dir)

    def _builtin(self) -> tuple[Any, Any, Any, Any]:
        if self._tiny is None:
            from . import tiny

            llm, tok, cap, proc = tiny.build()
            self._tiny = (llm.to(self.device), tok, cap.to(self.device), proc)
        return self._tiny

    # --- loading ----------------------------------------------------------------------------------------------

    def load_llm(self) -> tuple[Any, Any]:
        """The instruct model and its tokenizer, loaded at the first call and kept until the context exits."""
        if self.llm is None:
            if self.llm_source == BUILTIN:
                self.llm = self._builtin()[:2]
            else:
                self.llm = load_llm(self._folder(self.llm_source, "enhancer"), self.device)
        return self.llm

    def load_captioner(self) -> tuple[Any, Any]:
        """The Florence-2 captioner and its processor, loaded at the first call and kept until the context exits."""
        if self.captioner is None:
            if self.captioner_source == BUILTIN:
                self.captioner = self._builtin()[2:]
            else:
                self.captioner = load_captioner(self._folder(self.captioner_source, "captioner"), self.device)
        return self.captioner

    @property
    def modules(self) -> list[torch.nn.Module]:
        """The loaded models (empty after :meth:`free`)."""
        return [m for pair in (self.llm, self.captioner) if pair is not None for m in pair[:1]]

    def free(self) -> None:
        """Drop every loaded model and return their memory (the next :meth:`enhance` loads them again). With
        nothing loaded (``--enhance-prompt off``, a prompt kept) it does nothing: a garbage collection would return
        nothing and costs a fraction of a second per call (every extension, :func:`ltxcli.extend.run_extension`)."""
        from ltxcli.offload import release_memory

        if self.llm is None and self.captioner is None and self._tiny is None:
            return
        if not self._given:
            self.llm = self.captioner = self._tiny = None
        release_memory()

    def __enter__(self) -> PromptEnhancer:
        self._held += 1
        return self

    def __exit__(self, *exc: object) -> None:
        """Free the models (:meth:`free`) unless an outer ``with`` still holds them (a long video's window prompts
        are rewritten one by one, each through :meth:`enhance_resolved`, under one load)."""
        self._held = max(self._held - 1, 0)
        if not self._held:
            self.free()

    # --- the computation ------------------------------------------------------------------------------------

    def enhance(self, prompt: str, *, seed: int, image: Any = None) -> str:
        """The official rewrite of ``prompt`` (t2v; i2v when ``image``, a PIL image or condition pixels
        ``[1, 3, n, H, W]`` in [-1, 1] of which frame 0 is captioned), sampled under ``seed`` without touching the
        caller's RNG state."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt={prompt!r} must be a string")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        return generate.decode(self.load_llm()[1], self.enhance_ids(prompt, seed=seed, image=image))

    def enhance_ids(self, prompt: str, *, seed: int, image: Any = None) -> torch.Tensor:
        """:meth:`enhance` before decoding: the generated token ids ``[n]``."""
        if isinstance(image, torch.Tensor):
            image = generate.first_frame(image)
        caption_pair = self.load_captioner() if image is not None else None
        model, tokenizer = self.load_llm()
        # one seeded region around caption + rewrite, as the official call runs after torch.manual_seed(seed)
        with generate.seeded(seed, self.device):
            caption = generate.caption(*caption_pair, [image])[0] if caption_pair is not None else None
            return generate.rewrite_ids(model, tokenizer, prompt, caption, max_new_tokens=self.max_new_tokens)


__all__ = ["BUILTIN", "EnhancementSkippedWarning", "EnhancerError", "PromptEnhancer", "check_folder", "load_captioner", "load_llm"]
