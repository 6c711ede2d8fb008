"""ltxcli: run Lightricks' LTX-Video models from the command line or from Python."""

__version__ = "0.1.0.dev0"
