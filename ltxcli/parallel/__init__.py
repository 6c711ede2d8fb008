"""Several processes (GPUs, nodes) working on one video or one batch, as started by ``torchrun``.

* :mod:`.launch` starts a command under torchrun (``ltx ... --gpus N``; :mod:`.torchrun`: torchrun without its
  traceback) and reports the first failing worker's exit code; torch-free, like this package's import.
* :mod:`.context` is this process's place in the job (:class:`~.context.DistContext`, process group set-up
  and tear-down, ``[rank R/W host]`` labels).
* :mod:`.orchestrate` holds what ranks agree on or share out around a generation: rank 0's seeds and stdin,
  per-node download turns, batch sharding, output claims, per-rank statistics.
* :mod:`.transformer` and :mod:`.vae` split one video's transformer (guidance branches and/or tokens) and VAE
  decode (time) across the ranks; :func:`.transformer.parallelize` installs both on a pipeline.

Nothing here imports :mod:`ltxcli.perf` (whose benchmark imports this package).
"""
