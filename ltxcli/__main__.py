"""``python -m ltxcli`` runs the ``ltx`` command line."""

from ltxcli.cli import main

if __name__ == "__main__":
    main()
