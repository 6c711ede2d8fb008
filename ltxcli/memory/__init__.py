"""Memory plans: what a generation will hold on the device and the host, stage by stage, before it loads.

:mod:`~ltxcli.memory.weights` (the weights by stage, from modules the loaders build on the meta device),
:mod:`~ltxcli.memory.decode` (the VAE decode's memory model and the tiling choice the pipeline also uses),
:mod:`~ltxcli.memory.encode` (the VAE encode's memory model and the time chunk the encoders also pick by it),
:mod:`~ltxcli.memory.estimate` (stages, offload modes, the estimate of one generation; the temporal upscaler's working
memory: :mod:`~ltxcli.memory.upscale`),
:mod:`~ltxcli.memory.shape` (a request's shape and its estimator), :mod:`~ltxcli.memory.verdict` (whether it fits, and
what would) and :mod:`~ltxcli.memory.plan` (the plan of a run's requests; it re-exports the three). Nothing is
imported here, so importing one of them does not import the others (the pipeline imports
:mod:`~ltxcli.memory.decode` and :mod:`~ltxcli.memory.encode`, which the estimate builds on).
"""
