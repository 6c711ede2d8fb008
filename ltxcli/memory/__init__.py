"""Memory plans: what a generation will hold on the device and the host, stage by stage, before it loads.

:mod:`~ltxcli.memory.weights` (the weights by stage, from modules the loaders build on the meta device),
:mod:`~ltxcli.memory.decode` (the VAE decode's memory model and the tiling choice the pipeline also uses),
:mod:`~ltxcli.memory.plan` (stages, offload modes, the estimate and the verdict). Nothing is imported here, so
importing one of them does not import the others (the pipeline imports :mod:`~ltxcli.memory.decode`, which
:mod:`~ltxcli.memory.plan` builds on).
"""
