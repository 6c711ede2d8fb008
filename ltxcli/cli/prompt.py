"""``ltx prompt``: the enhanced prompt (:mod:`ltxcli.enhance`), printed for review or editing before generating."""
from typing import Annotated

import typer

from . import generate as g
from .common import Output, guarded
from .resolve import ensure_downloaded, resolve


@guarded
def prompt(text: Annotated[str, typer.Argument(metavar="PROMPT", help="The prompt; '-' reads it from stdin.")], image: Annotated[str | None, typer.Option(show_default=False, help="Image-to-video: the first frame.")] = None, extend: Annotated[str | None, typer.Option(metavar="VIDEO", show_default=False, help="As `ltx extend VIDEO PROMPT` rewrites it: the frame the new ones continue from captioned (VIDEO's last; its first with --backward), at the output size VIDEO gives.")] = None, backward: Annotated[bool, typer.Option("--backward", help="With --extend: as `ltx extend --backward` (new frames before VIDEO's start).")] = False,
           model: g.ModelOpt = None, enhancer_model: g.EnhancerOpt = None, caption_model: g.CaptionerOpt = None, seed: g.SeedOpt = None,
           device: g.DeviceOpt = None, weights_dir: g.WeightsDirOpt = None, json_: g.JsonOpt = False, quiet: g.QuietOpt = False) -> None:
    """Print PROMPT as `ltx generate --enhance-prompt on` (with --extend: `ltx extend`) rewrites it (same model, --seed, --image and device)."""
    from ltxcli.enhance.stage import enhance_prompt
    out = Output(json_mode=json_, quiet=quiet)
    res = enhance_prompt(g.batch_file.read_stdin("PROMPT -").strip() if text == "-" else text, resolve(model, weights_dir=weights_dir).preset, image=image, extend=extend, backward=backward, seed=seed, llm=enhancer_model, captioner=caption_model,
                         device=device, weights_dir=weights_dir, warn=out.warn, download=lambda n: ensure_downloaded(n, weights_dir=weights_dir, out=out))
    if seed is None and not json_:  # drawn: said, so that the rewrite can be made again (--json carries it)
        out.info(f"seed {res['seed']}")
    out.json(res) if json_ else out.data(res["enhanced_prompt"])
