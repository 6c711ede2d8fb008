"""Prompt enhancement as the official pipeline does it (``generate_cinematic_prompt`` and the word rule of
``inference.py``), with transformers' native classes only and safetensors only.

* :mod:`.rules`: system prompts, settings and :func:`plan` (whether and how a request's prompt is rewritten), no
  torch;
* :mod:`.generate`: the computation on loaded models (caption, chat template, seeded sampling, decoding);
* :mod:`.enhancer`: :class:`~ltxcli.enhance.enhancer.PromptEnhancer`, which loads its models on first use and frees
  them;
* :mod:`.florence`: Florence-2 PromptGen's remote-code layout converted to the native classes at load;
* :mod:`.stage`: the enhancement stage of a run (before the T5 stage, models freed before denoising);
* :mod:`.tiny`: tiny random enhancer models (``tiny``) for tests and plumbing checks.

Importing this package imports no torch.
"""

from .rules import DEFAULT_WORDS_THRESHOLD, MODES, EnhancePlan, check_mode, plan, word_count

__all__ = ["DEFAULT_WORDS_THRESHOLD", "MODES", "EnhancePlan", "check_mode", "plan", "word_count"]
