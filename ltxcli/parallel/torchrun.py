"""torchrun (``torch.distributed.run``) as ``ltx --gpus`` starts it (:func:`ltxcli.parallel.launch.launch`): the
same launcher, ending without its Python traceback when a worker failed or a signal stopped it. Each worker has
already said what went wrong in one line; the launcher's exit code is unchanged (1), and the job's code comes
from the workers' (:func:`ltxcli.parallel.launch.job_exit_code`). A worker a signal ended (SIGKILL: most
likely the out-of-memory killer) could do neither: its signal is recorded here for it
(:func:`ltxcli.parallel.launch.record_signal_deaths`), as is a signal that stopped torchrun itself
(:func:`ltxcli.parallel.launch.record_launcher_signal`): workers still starting die of it before they can say so."""

from __future__ import annotations

import logging
import os
import sys


def main() -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    from .launch import record_launcher_signal, record_signal_deaths

    if os.environ.get("LOGLEVEL"):  # torch's own variable, which only some of its elastic loggers read
        logging.getLogger("torch.distributed").setLevel(os.environ["LOGLEVEL"])
    try:
        torchrun()
    except ChildFailedError as e:  # a worker a signal ended said nothing: recorded here for `ltx --gpus`
        record_signal_deaths({rank: (-f.exitcode, f.timestamp) for rank, f in e.failures.items() if f.exitcode < 0})
        sys.exit(1)
    except SignalException as e:  # torchrun itself was signalled, and stopped the workers with the same signal
        record_launcher_signal(int(e.sigval))  # a worker still starting dies of it without a word
        sys.exit(1)


if __name__ == "__main__":
    main()
