"""``python -m ltxcli`` runs the ``ltx`` command line."""

from ltxcli.parallel.launch import hold_sigint_while_starting

# first: a torchrun worker signalled during the imports below dies of it without their traceback (see there)
hold_sigint_while_starting()

from ltxcli.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
