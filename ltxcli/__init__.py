"""ltxcli: run Lightricks' LTX-Video models from the command line or from Python.

>>> import ltxcli
>>> pipe = ltxcli.load_pipeline("tiny")
>>> res = pipe.generate("a cat surfing", seed=1)
>>> res.video.shape  # [F, H, W, 3] float32 in [0, 1]
>>> ltxcli.save_video(res, "cat.mp4")  # an H.264 MP4 with its generation record

The public names below are imported on first use (PEP 562 ``__getattr__``), so ``import ltxcli`` and
``ltx --version`` / ``ltx --help`` do not import torch. Modules inside the package import these names from
their defining modules, never through this one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# public name -> "module:attribute" it is defined in
_LAZY: dict[str, str] = {
    "Condition": "ltxcli.request:Condition",
    "Control": "ltxcli.request:Control",
    "Extension": "ltxcli.request:Extension",
    "GenerationRequest": "ltxcli.request:GenerationRequest",
    "GenerationResult": "ltxcli.result:GenerationResult",
    "Pipeline": "ltxcli.pipeline:Pipeline",
    "load_pipeline": "ltxcli.api:load_pipeline",
    "PromptEnhancer": "ltxcli.enhance.enhancer:PromptEnhancer",
    "BatchItem": "ltxcli.batch:BatchItem",
    "ItemResult": "ltxcli.runner:ItemResult",
    "run_batch": "ltxcli.runner:run_batch",
    "save_video": "ltxcli.runner:save_video",
    "ModelSpec": "ltxcli.spec:ModelSpec",
    "resolve_spec": "ltxcli.spec:resolve_spec",
}

__all__ = [
    "BatchItem", "Condition", "Control", "Extension", "GenerationRequest", "GenerationResult", "ItemResult", "ModelSpec", "Pipeline", "PromptEnhancer",
    "__version__", "load_pipeline", "resolve_spec", "run_batch", "save_video",
]

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time __getattr__ resolves these
    from ltxcli.api import load_pipeline
    from ltxcli.batch import BatchItem
    from ltxcli.enhance.enhancer import PromptEnhancer
    from ltxcli.pipeline import Pipeline
    from ltxcli.request import Condition, Control, Extension, GenerationRequest
    from ltxcli.result import GenerationResult
    from ltxcli.runner import ItemResult, run_batch, save_video
    from ltxcli.spec import ModelSpec, resolve_spec


if not TYPE_CHECKING:  # hidden from type checkers: to them a module __getattr__ makes every name, a typo too, Any

    def __getattr__(name: str) -> Any:
        target = _LAZY.get(name)
        if target is None:
            raise AttributeError(f"module 'ltxcli' has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip __getattr__
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
