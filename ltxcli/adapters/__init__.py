"""Adapters: modules that transform a loaded model or a request, each its own concern.

* :mod:`.lora`: what a LoRA request names (``PATH_OR_NAME[:SCALE]``, a weights.toml entry or a file) and the
  check of a registry LoRA against the base model it is made for; imports no torch.
* :mod:`.lora_merge`: LoRA files in every common key format, merged into (and removed from) a loaded transformer.
"""
