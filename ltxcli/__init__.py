"""ltxcli: run Lightricks' LTX-Video models from the command line or from Python.

>>> import ltxcli
>>> pipe = ltxcli.load_pipeline("tiny")
>>> res = pipe.generate("a cat surfing", seed=1)
>>> res.video.shape  # [F, H, W, 3] float32 in [0, 1]
"""

from .api import load_pipeline
from .pipeline import Condition, GenerationResult, Pipeline

__version__ = "0.1.0.dev0"
__all__ = ["Condition", "GenerationResult", "Pipeline", "__version__", "load_pipeline"]
