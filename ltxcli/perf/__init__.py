"""Performance figures: what the work costs and how fast it runs.

* :mod:`.flops` counts the matrix-product FLOPs of every stage from architecture configs;
* :mod:`.comm` models what the parallel modes of :mod:`ltxcli.parallel` communicate per step
  (``python -m ltxcli.perf.comm`` prints it);
* :mod:`.gpus` holds the GPU peak table and device names;
* :mod:`.bench` builds random full-size pipelines and times :meth:`Pipeline.generate` (``ltx bench``).

This package may import :mod:`ltxcli.parallel` (the bench splits a video over torchrun ranks); nothing in
:mod:`ltxcli.parallel` imports this package.
"""
