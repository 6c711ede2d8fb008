"""``python -m ltxcli`` runs the ``ltx`` command line; :func:`main` is the ``ltx`` console script too."""

from ltxcli.parallel.launch import hold_stops_while_starting


def main() -> None:
    """The ``ltx`` command line, with SIGINT, SIGTERM and SIGHUP held while it is imported (see
    :func:`ltxcli.parallel.launch.hold_stops_while_starting`): one then is its one line, never a traceback."""
    hold_stops_while_starting()  # first: a torchrun worker signalled during the import dies of it without a word
    from ltxcli.cli import main as run

    run()


if __name__ == "__main__":
    main()
