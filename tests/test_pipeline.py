"""``Pipeline.generate`` against the official ``LTXVideoPipeline`` / ``LTXMultiScalePipeline`` (ltx-video 0.1.2).

Tiny models with the real block structure (``ltxcli.tiny`` configs) get identical weights in ours and in the
official classes; the official pipeline is called the way ``ltx_video/inference.py`` ``infer()`` calls it
(padded sizes, ``is_video=True``, ``vae_per_channel_normalize=True``, a CPU generator seeded with the seed and
``torch.manual_seed(seed)`` for the global stream, then the same crop). All float32 on the CPU.

Differences from the official code that the tests bridge, and why:
* The official encodes conditioning media with a posterior SAMPLE (global RNG); ours uses the posterior mode.
  The encoder's log-variance output is biased to -1e4, so the official log-variance clamps at -30 and its
  sample is ``mode + exp(-15) * eps``: the measured difference stays far below the tolerance. Those draws
  also shift the official global stream, so conditioned cases decode with ``decode_noise_scale=0``.
* Stochastic sampling: the official scheduler draws ``torch.randn_like`` from the GLOBAL RNG, ours from the
  run's generator in the same order (after the step's conditioning noise). The stochastic case replaces
  ``torch.randn_like`` during the official call by one that draws from the official call's own generator,
  which is exactly our stream; latents only (the official decode noise would use the patched draw too).

Run with ``-s`` to see the measured errors.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import one_thread  # noqa: F401  (module autouse fixture)

pytest.importorskip("einops")
pytest.importorskip("diffusers")
official_pipe = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")

from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder  # noqa: E402
from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler as OfficialUpsampler  # noqa: E402
from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier  # noqa: E402
from ltx_video.models.transformers.transformer3d import Transformer3DModel  # noqa: E402
from ltx_video.schedulers.rf import RectifiedFlowScheduler  # noqa: E402
from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy  # noqa: E402

from ltxcli.models.configs import SchedulerConfig, UpsamplerConfig, VAEConfig, official_vae_config  # noqa: E402
from ltxcli.models.upsampler import LatentUpsampler  # noqa: E402
from ltxcli.models.vae import CausalVideoVAE  # noqa: E402
from ltxcli.pipeline import Pipeline  # noqa: E402
from ltxcli.presets import NEUTRAL, PassSettings, Preset  # noqa: E402
from ltxcli.request import Condition  # noqa: E402
from ltxcli.result import GenerationResult  # noqa: E402
from ltxcli.tiny import LATENT_CHANNELS, TINY_TRANSFORMER, build_pipeline  # noqa: E402

ConditioningItem = official_pipe.ConditioningItem
LTXVideoPipeline = official_pipe.LTXVideoPipeline
LTXMultiScalePipeline = official_pipe.LTXMultiScalePipeline

TOL = 1e-5
PROMPT = "a red car on the road at night"
NEGATIVE = "blurry dark"
FPS = 24.0
STG = {
    "attention_values": SkipLayerStrategy.AttentionValues,
    "attention_skip": SkipLayerStrategy.AttentionSkip,
    "transformer_block": SkipLayerStrategy.TransformerBlock,
    "residual": SkipLayerStrategy.Residual,
}
SD3_TERMINAL = {"shifting": "SD3", "target_shift_terminal": 0.1}  # the 0.9.x checkpoints' scheduler
CPU = torch.device("cpu")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| in float64."""
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


# --- models ------------------------------------------------------------------------------------------------




@dataclass
class Models:
    ours: Pipeline
    official: LTXVideoPipeline
    ours_up: LatentUpsampler
    official_up: OfficialUpsampler


def _official_vae(ours: CausalVideoVAE) -> CausalVideoAutoencoder:
    vae = CausalVideoAutoencoder.from_config(copy.deepcopy(ours.config.to_official())).eval()
    # the official load_state_dict also registers std_of_means / mean_of_means from per_channel_statistics.*
    vae.load_state_dict(ours.state_dict())
    assert torch.equal(vae.std_of_means, ours.per_channel_statistics.std_of_means)
    return vae.requires_grad_(False)


def _one_layer(params: Any) -> Any:
    """Official block params (an int layer count or a dict) with one layer per block."""
    if isinstance(params, int):
        return 1
    return {**params, "num_layers": 1} if "num_layers" in params else params


def _deterministic_posterior(vae: CausalVideoVAE) -> None:
    # last conv_out channel = the uniform log-variance: clamped at -30 by the official posterior
    with torch.no_grad():
        vae.encoder.conv_out.conv.bias[-1] = -1e4


def _build(vae_family: str) -> Models:
    ours = build_pipeline(CPU, torch.float32)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in ours.transformer.parameters():  # no parameter keeps a special (0 or 1) init value
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    if vae_family != "0.9.5":
        cfg = official_vae_config(vae_family)
        for key in ("blocks", "encoder_blocks", "decoder_blocks"):
            if key in cfg:
                cfg[key] = [[name, _one_layer(params)] for name, params in cfg[key]]
        cfg.update(latent_channels=LATENT_CHANNELS, encoder_base_channels=8, decoder_base_channels=8)
        torch.manual_seed(12)
        vae = CausalVideoVAE(VAEConfig.from_official(cfg)).eval().requires_grad_(False)
        with torch.no_grad():
            for name, p in vae.named_parameters():
                if "scale_shift_table" in name or "per_channel_scale" in name:
                    p.normal_(0, 0.1, generator=gen)
            vae.per_channel_statistics.get_buffer("std-of-means").uniform_(0.5, 1.5, generator=gen)
            vae.per_channel_statistics.get_buffer("mean-of-means").normal_(0, 0.1, generator=gen)
        ours = Pipeline(ours.transformer, vae, ours.text_encoder, preset=ours.preset, name="tiny-" + vae_family)
    _deterministic_posterior(ours.vae)

    transformer = Transformer3DModel.from_config(TINY_TRANSFORMER.to_official()).eval().requires_grad_(False)
    transformer.load_state_dict(ours.transformer.state_dict())
    official = LTXVideoPipeline(
        tokenizer=ours.text_encoder.tokenizer,
        text_encoder=ours.text_encoder.model,
        vae=_official_vae(ours.vae),
        transformer=transformer,
        scheduler=RectifiedFlowScheduler(),
        patchifier=SymmetricPatchifier(patch_size=1),
        prompt_enhancer_image_caption_model=None,
        prompt_enhancer_image_caption_processor=None,
        prompt_enhancer_llm_model=None,
        prompt_enhancer_llm_tokenizer=None,
    )

    up_cfg = UpsamplerConfig(in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1)
    ours_up = LatentUpsampler(up_cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in ours_up.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    official_up = OfficialUpsampler(**{k: v for k, v in up_cfg.to_official().items() if k != "_class_name"})
    official_up.load_state_dict(ours_up.state_dict())
    return Models(ours, official, ours_up, official_up.eval().requires_grad_(False))


@pytest.fixture(scope="module")
def models() -> Models:
    return _build("0.9.5")


@pytest.fixture(scope="module")
def models_091() -> Models:
    """A 0.9.1-family VAE: timestep-conditioned decoder WITH noise injection (global RNG in the official)."""
    return _build("0.9.1")


@pytest.fixture(scope="module")
def tiny() -> Pipeline:
    """The public tiny model, unchanged."""
    return build_pipeline(CPU, torch.float32)


# --- one parity case ---------------------------------------------------------------------------------------


def pixels(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """[n, h, w, 3] in [0, 1], multiples of 1/64 (x * 2 - 1 is exact), smooth enough to be image-like."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 3, max(h // 8, 1), max(w // 8, 1)), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (torch.round(smooth * 64) / 64).permute(0, 2, 3, 1).contiguous()


@dataclass
class Case:
    id: str
    height: int
    width: int
    num_frames: int
    passes: dict[str, Any] = field(default_factory=dict)  # official __call__ keys (one pass)
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD3_TERMINAL))
    conditions: tuple[tuple[torch.Tensor, int, float], ...] = ()  # (pixels [n, H, W, 3], frame, strength)
    image_cond_noise_scale: float = 0.15
    decode_timestep: float = 0.05
    decode_noise_scale: float = 0.025
    stochastic: bool = False
    stg_mode: str = "attention_values"
    multi: tuple[dict[str, Any], dict[str, Any], float] | None = None  # (first_pass, second_pass, factor)
    seed: int = 171198
    via_preset: bool = False  # ours: pass settings through a Preset instead of generate() arguments
    video: torch.Tensor | None = None  # v2v input [F, H, W, 3] (official media_items; ours video=)
    denoise_strength: float = 0.5


def _padded(c: Case) -> tuple[int, int, int]:
    # inference.py: sizes up to multiples of 32, frames up to 8k + 1 (typed out here, not taken from ltxcli)
    return ((c.height - 1) // 32 + 1) * 32, ((c.width - 1) // 32 + 1) * 32, ((c.num_frames - 2) // 8 + 1) * 8 + 1


def run_official(m: Models, c: Case, output_type: str, record: dict[str, Any] | None = None) -> torch.Tensor:
    hp, wp, fp = _padded(c)
    items = [
        ConditioningItem(px.permute(3, 0, 1, 2)[None] * 2 - 1, frame, strength)  # [1, 3, n, H, W] in [-1, 1]
        for px, frame, strength in c.conditions
    ]
    sched = SchedulerConfig.from_official(c.scheduler).to_official()
    m.official.scheduler = RectifiedFlowScheduler(**{k: v for k, v in sched.items() if k != "_class_name"})
    torch.manual_seed(c.seed)  # inference.py seed_everething: the global stream (decode noise, VAE noise)
    generator = torch.Generator("cpu").manual_seed(c.seed)
    if record is not None:
        record["generator"] = generator
    kwargs: dict[str, Any] = dict(
        prompt=PROMPT, negative_prompt=NEGATIVE, prompt_attention_mask=None, negative_prompt_attention_mask=None,
        skip_layer_strategy=STG[c.stg_mode], generator=generator, output_type=output_type, callback_on_step_end=None,
        height=hp, width=wp, num_frames=fp, frame_rate=FPS, conditioning_items=items or None,
        media_items=None if c.video is None else c.video.permute(3, 0, 1, 2)[None] * 2 - 1,
        is_video=True, vae_per_channel_normalize=True, image_cond_noise_scale=c.image_cond_noise_scale,
        mixed_precision=False, offload_to_cpu=False, enhance_prompt=False, decode_timestep=c.decode_timestep,
        decode_noise_scale=c.decode_noise_scale, stochastic_sampling=c.stochastic,
    )
    with torch.no_grad():
        if c.multi is not None:
            first, second, factor = c.multi
            pipe = LTXMultiScalePipeline(m.official, latent_upsampler=m.official_up)
            out = pipe(downscale_factor=factor, first_pass=copy.deepcopy(first), second_pass=copy.deepcopy(second),
                       **kwargs).images
        else:
            out = m.official(**copy.deepcopy(c.passes), **kwargs).images
    if output_type == "latent":
        return out
    # inference.py crop: frames, then the padding around the requested size
    pad_h, pad_w = hp - c.height, wp - c.width
    top, left = pad_h // 2, pad_w // 2
    out = out[:, :, : c.num_frames, top : top + c.height, left : left + c.width]
    return out[0].permute(1, 2, 3, 0)  # [F, H, W, 3]


def run_ours(m: Models, c: Case):
    pipe = m.ours
    pipe.scheduler = SchedulerConfig.from_official(c.scheduler)
    pipe.upsampler = m.ours_up
    conditions = [Condition(px, frame, strength) for px, frame, strength in c.conditions]
    common = dict(
        negative_prompt=NEGATIVE, height=c.height, width=c.width, num_frames=c.num_frames, frame_rate=FPS,
        conditions=conditions, seed=c.seed,
    )
    if c.via_preset:
        saved = pipe.preset
        pipe.preset = Preset(
            name=c.id, checkpoint="", pipeline_type="base", passes=(PassSettings().updated(c.passes),),
            stochastic_sampling=c.stochastic, stg_mode=c.stg_mode, decode_timestep=c.decode_timestep,
            decode_noise_scale=c.decode_noise_scale, image_cond_noise_scale=c.image_cond_noise_scale,
        )
        try:
            return pipe.generate(PROMPT, **common)
        finally:
            pipe.preset = saved
    extra = dict(
        decode_timestep=c.decode_timestep, decode_noise_scale=c.decode_noise_scale,
        image_cond_noise_scale=c.image_cond_noise_scale, stochastic_sampling=c.stochastic, stg_mode=c.stg_mode,
    )
    if c.multi is not None:
        first, second, factor = c.multi
        return pipe.generate(PROMPT, first_pass=first, second_pass=second, downscale_factor=factor, **common, **extra)
    if c.video is not None:
        extra.update(video=c.video, denoise_strength=c.denoise_strength)
    p = c.passes
    return pipe.generate(
        PROMPT, steps=p.get("num_inference_steps"), timesteps=p.get("timesteps"),
        guidance_scale=p["guidance_scale"], stg_scale=p["stg_scale"], rescale_scale=p["rescaling_scale"],
        stg_blocks=p["skip_block_list"], cfg_star_rescale=p.get("cfg_star_rescale", False),
        tone_map_compression_ratio=p.get("tone_map_compression_ratio"), **common, **extra,
    )


def check_parity(m: Models, c: Case) -> None:
    """Our latents vs the official ``output_type="latent"``, our video vs the official ``"pt"`` (cropped)."""
    res = run_ours(m, c)
    want_lat = run_official(m, c, "latent")
    want_vid = run_official(m, c, "pt")
    assert res.latents.shape == want_lat.shape
    assert res.video.shape == want_vid.shape == (c.num_frames, c.height, c.width, 3)
    err_lat, err_vid = rel_err(res.latents, want_lat), rel_err(res.video, want_vid)
    msg = (f"[{c.id}] latents {tuple(want_lat.shape)} rel err {err_lat:.3e}; "
           f"video {tuple(want_vid.shape)} rel err {err_vid:.3e}")
    print(msg)
    assert err_lat <= TOL and err_vid <= TOL, msg


# --- official parity ---------------------------------------------------------------------------------------

BASE_2B = dict(num_inference_steps=4, guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=[1])


def test_t2v_cfg_stg_rescale_padding_matches_official(models: Models) -> None:
    # 50x90x14 pads to 64x96x17 (inference.py), cropped back by both
    check_parity(models, Case("t2v cfg+stg+rescale, padded", 50, 90, 14, passes=BASE_2B))


def test_t2v_linear_quadratic_attention_skip_matches_official(models: Models) -> None:
    passes = dict(num_inference_steps=5, guidance_scale=4.5, stg_scale=1.5, rescaling_scale=0.5, skip_block_list=[0])
    check_parity(models, Case("t2v LinearQuadratic, stg_as", 64, 64, 17, passes=passes,
                              scheduler={"sampler": "LinearQuadratic"}, stg_mode="attention_skip"))


def test_t2v_explicit_timesteps_transformer_block_matches_official(models: Models) -> None:
    passes = dict(timesteps=[1.0, 0.9937, 0.9094, 0.725], guidance_scale=1.0, stg_scale=2.0, rescaling_scale=1.0,
                  skip_block_list=[0, 1], tone_map_compression_ratio=0.6)
    check_parity(models, Case("t2v explicit timesteps, stg_t, tone map", 64, 96, 9, passes=passes,
                              scheduler={"sampler": "LinearQuadratic"}, stg_mode="transformer_block"))


def test_t2v_residual_stg_matches_official(models: Models) -> None:
    # the official configs' fourth stg_mode: it perturbs no block, so with CFG only the rescaling acts
    check_parity(models, Case("t2v stg residual", 64, 64, 17, passes=BASE_2B, stg_mode="residual"))


def test_t2v_per_step_guidance_schedule_matches_official(models: Models) -> None:
    # 13B-dev style: per-interval lists indexed through guidance_timesteps, CFG-zero*, skip final steps
    passes = dict(
        num_inference_steps=10, skip_final_inference_steps=2,
        guidance_scale=[1, 4, 6, 1, 2], stg_scale=[0, 2, 1, 1, 0], rescaling_scale=[1, 0.5, 0.7, 1, 1],
        guidance_timesteps=[1.0, 0.95, 0.8, 0.5, 0.3],
        skip_block_list=[[], [0, 1], [1], [0], [1]], cfg_star_rescale=True,
    )
    check_parity(models, Case("t2v per-step schedules, cfg*", 64, 64, 17, passes=passes,
                              scheduler={"sampler": "Uniform"}, via_preset=True))


def test_decode_noise_injection_091_vae_matches_official(models_091: Models) -> None:
    # decode noise, then the decoder's injected noise maps: the official global stream, our seeded generator
    check_parity(models_091, Case("t2v 0.9.1 VAE (noise injection)", 64, 64, 9, passes=BASE_2B, decode_noise_scale=0.1))


def test_i2v_matches_official(models: Models) -> None:
    # condition image at another size (both resize it bilinearly to the generation size)
    cond = ((pixels(1, 48, 80, seed=3), 0, 1.0),)
    check_parity(models, Case("i2v, image 48x80 -> 64x96", 64, 96, 17, passes=BASE_2B, conditions=cond,
                              decode_noise_scale=0.0))


def test_keyframes_match_official(models: Models) -> None:
    cond = ((pixels(1, 64, 64, seed=4), 0, 1.0), (pixels(1, 64, 64, seed=5), 16, 0.8),
            (pixels(1, 64, 64, seed=6), 24, 1.0))
    check_parity(models, Case("first frame + keyframes at 16 (0.8) and 24", 64, 64, 33, passes=BASE_2B,
                              conditions=cond, decode_noise_scale=0.0))


def test_video_to_video_matches_official(models: Models) -> None:
    # official input_media_path: encoded, noised to the first kept timestep (skip_initial 2 of 4 = strength 0.5)
    passes = dict(BASE_2B, skip_initial_inference_steps=2)
    check_parity(models, Case("v2v, strength 0.5", 64, 96, 17, passes=passes, video=pixels(17, 64, 96, seed=8),
                              denoise_strength=0.5, decode_noise_scale=0.0))


def test_video_extension_matches_official(models: Models) -> None:
    # a 17-frame segment at frame 8 (2 prefix latents -> extra tokens, 1 in place) and a 9-frame one at 24
    cond = ((pixels(17, 64, 64, seed=7), 8, 1.0), (pixels(9, 64, 64, seed=8), 24, 0.9))
    check_parity(models, Case("video segments at 8 and 24", 64, 64, 41, passes=BASE_2B, conditions=cond,
                              decode_noise_scale=0.0))


def test_stochastic_sampling_matches_official_with_shared_stream(models: Models, monkeypatch) -> None:
    c = Case("stochastic, i2v", 64, 64, 17, passes=dict(BASE_2B, num_inference_steps=5),
             conditions=((pixels(1, 64, 64, seed=9), 0, 1.0),), stochastic=True, decode_noise_scale=0.0)
    res = run_ours(models, c)
    real_randn_like = torch.randn_like
    record: dict[str, Any] = {}

    def randn_like_from_run_generator(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return real_randn_like(x, generator=record["generator"])

    with monkeypatch.context() as mp:
        mp.setattr(torch, "randn_like", randn_like_from_run_generator)
        want = run_official(models, c, "latent", record)
    err = rel_err(res.latents, want)
    print(f"[{c.id}] latents rel err {err:.3e}")
    assert err <= TOL
    # ... and it is stochastic: deterministic sampling gives another result
    det = run_ours(models, replace(c, stochastic=False))
    assert rel_err(det.latents, res.latents) > 1e-2


def test_checkpoint_defaults_match_the_official_call_defaults(models: Models) -> None:
    # A checkpoint no preset names runs with NEUTRAL; the official __call__ given only the step count takes
    # guidance 4.5, stg 1, rescaling 0.7 and no skip blocks: STG perturbs nothing, the rescaling still applies
    c = Case("official __call__ defaults", 64, 64, 17, passes=dict(num_inference_steps=4))
    pipe = models.ours
    pipe.scheduler = SchedulerConfig.from_official(c.scheduler)
    saved, pipe.preset = pipe.preset, NEUTRAL
    try:
        res = pipe.generate(PROMPT, negative_prompt=NEGATIVE, height=c.height, width=c.width, num_frames=c.num_frames,
                            frame_rate=FPS, seed=c.seed, steps=4)
    finally:
        pipe.preset = saved
    assert (NEUTRAL.decode_timestep, NEUTRAL.decode_noise_scale) == (c.decode_timestep, c.decode_noise_scale)
    err_lat = rel_err(res.latents, run_official(models, c, "latent"))
    err_vid = rel_err(res.video, run_official(models, c, "pt"))
    print(f"[{c.id}] latents rel err {err_lat:.3e}; video rel err {err_vid:.3e}")
    assert err_lat <= TOL and err_vid <= TOL


MULTI_DISTILLED = (
    dict(timesteps=[1.0, 0.9937, 0.9094, 0.725], guidance_scale=1, stg_scale=0, rescaling_scale=1,
         skip_block_list=[1]),
    dict(timesteps=[0.9094, 0.725, 0.4219], guidance_scale=1, stg_scale=0, rescaling_scale=1,
         skip_block_list=[1], tone_map_compression_ratio=0.6),
    0.6666666,
)
MULTI_DEV = (
    dict(num_inference_steps=8, skip_final_inference_steps=2, guidance_scale=[1, 3, 2], stg_scale=[0, 1, 1],
         rescaling_scale=[1, 0.7, 1], guidance_timesteps=[1.0, 0.9, 0.5], skip_block_list=[[], [1], [0]],
         cfg_star_rescale=True),
    dict(num_inference_steps=8, skip_initial_inference_steps=5, guidance_scale=[1], stg_scale=[1],
         rescaling_scale=[1], guidance_timesteps=[1.0], skip_block_list=[1], cfg_star_rescale=True),
    0.6666666,
)


def test_scalar_guidance_over_per_interval_schedules_matches_official(models: Models) -> None:
    # guidance_scale=3 on a 13B-dev-like preset: a scalar at every step beside the stg and rescaling lists, which
    # still index guidance_timesteps, and each pass's own blocks (the official configs with guidance_scale: 3)
    first, second, factor = MULTI_DEV
    c = Case("13B-dev-like + guidance_scale=3", 96, 96, 17, scheduler={"sampler": "Uniform"},
             multi=(dict(first, guidance_scale=3.0), dict(second, guidance_scale=3.0), factor))
    pipe = models.ours
    pipe.scheduler, pipe.upsampler = SchedulerConfig.from_official(c.scheduler), models.ours_up
    saved, pipe.preset = pipe.preset, Preset(
        name="dev-like", checkpoint="", pipeline_type="multi-scale", downscale_factor=factor,
        passes=(PassSettings().updated(first), PassSettings().updated(second)),
    )
    try:
        res = pipe.generate(PROMPT, guidance_scale=3.0, negative_prompt=NEGATIVE, height=c.height, width=c.width,
                            num_frames=c.num_frames, frame_rate=FPS, seed=c.seed)
    finally:
        pipe.preset = saved
    err_lat = rel_err(res.latents, run_official(models, c, "latent"))
    err_vid = rel_err(res.video, run_official(models, c, "pt"))
    print(f"[{c.id}] latents rel err {err_lat:.3e}; video rel err {err_vid:.3e}")
    assert err_lat <= TOL and err_vid <= TOL


def test_multiscale_distilled_t2v_matches_official(models: Models) -> None:
    # 90x120x15 pads to 96x128x17; first pass 32x64, second 64x128, resized to 96x128 and cropped
    check_parity(models, Case("multi-scale distilled t2v, tone map", 90, 120, 15, multi=MULTI_DISTILLED))


def test_multiscale_dev_i2v_matches_official(models: Models) -> None:
    cond = ((pixels(1, 96, 96, seed=10), 0, 1.0),)
    check_parity(models, Case("multi-scale dev i2v", 96, 96, 17, multi=MULTI_DEV, conditions=cond,
                              scheduler={"sampler": "Uniform"}, decode_noise_scale=0.0))


def _multiscale_v2v(models: Models, video: torch.Tensor, strength: float, seed: int) -> GenerationResult:
    """Ours: the distilled multi-scale passes over ``video`` at ``strength``; the official pipeline is given the
    same scheduler."""
    first, second, factor = MULTI_DISTILLED
    pipe = models.ours
    pipe.scheduler, pipe.upsampler = SchedulerConfig.from_official(SD3_TERMINAL), models.ours_up
    res = pipe.generate(PROMPT, negative_prompt=NEGATIVE, height=96, width=128, num_frames=17, frame_rate=FPS,
                        seed=seed, first_pass=first, second_pass=second, downscale_factor=factor, video=video,
                        denoise_strength=strength, image_cond_noise_scale=0.15, stochastic_sampling=False,
                        stg_mode="attention_values", decode_noise_scale=0.0)
    sched = SchedulerConfig.from_official(SD3_TERMINAL).to_official()
    models.official.scheduler = RectifiedFlowScheduler(**{k: v for k, v in sched.items() if k != "_class_name"})
    return res


def test_multiscale_video_to_video_matches_the_official_passes(models: Models) -> None:
    """Multi-scale v2v. The official ``LTXMultiScalePipeline`` hands ``media_items`` to both passes and fails
    (the full-size input in the downscaled first pass: "Latents have to be of shape ..."; with the upscaled
    latents in the second: "Cannot provide both latents and media_items"). Ours is its two official passes
    with what each can take: the first the input resized to its size (official ``resize_tensor``) and noised to
    the strength, the second the upscaled latents; each pass's schedule cut at the strength."""
    first, second, _ = MULTI_DISTILLED
    video, strength, seed = pixels(17, 96, 128, seed=9), 0.8, 4242
    res = _multiscale_v2v(models, video, strength, seed)
    generator = torch.Generator("cpu").manual_seed(seed)  # one stream through both passes, as the official
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, prompt_attention_mask=None,
                  negative_prompt_attention_mask=None, skip_layer_strategy=STG["attention_values"],
                  generator=generator, output_type="latent", callback_on_step_end=None, num_frames=17,
                  frame_rate=FPS, conditioning_items=None, is_video=True, vae_per_channel_normalize=True,
                  image_cond_noise_scale=0.15, mixed_precision=False, offload_to_cpu=False, enhance_prompt=False,
                  stochastic_sampling=False)
    h1, w1 = 32, 64  # LTXMultiScalePipeline: int(96 * 2/3) = 63 -> 32, int(128 * 2/3) = 85 -> 64
    media = LTXVideoPipeline.resize_tensor(video.permute(3, 0, 1, 2)[None] * 2 - 1, h1, w1)
    with torch.no_grad():
        lat1 = models.official(**{**first, "timesteps": [0.725]}, **common, height=h1, width=w1,
                               media_items=media).images
        multi = LTXMultiScalePipeline(models.official, latent_upsampler=models.official_up)
        up = official_pipe.adain_filter_latent(multi._upsample_latents(models.official_up, lat1), lat1)
        want = models.official(**{**second, "timesteps": [0.725, 0.4219]}, **common, height=2 * h1,
                               width=2 * w1, latents=up, media_items=None).images
    assert res.latents.shape == want.shape == (1, LATENT_CHANNELS, 3, 2, 4)
    err = rel_err(res.latents, want)
    print(f"[multi-scale v2v, strength {strength}] latents rel err {err:.3e}")
    assert err <= TOL
    assert res.settings["passes"][0]["timesteps"] == (0.725,)  # the strength cut both schedules
    assert res.settings["passes"][1]["timesteps"] == (0.725, 0.4219)
    assert res.video.shape == (17, 96, 128, 3)


def test_multiscale_video_to_video_below_the_first_schedule_is_the_official_second_pass_alone(
        models: Models) -> None:
    """At a strength below every first-pass timestep (0.5 < 0.725: ``ltx v2v``'s default with a distilled model)
    the first pass keeps no step: the run is the official single pass with the second pass's settings, its
    schedule cut at the strength (0.4219), over the input at the full size (``media_items``)."""
    _, second, _ = MULTI_DISTILLED
    video, strength, seed = pixels(17, 96, 128, seed=9), 0.5, 4243
    res = _multiscale_v2v(models, video, strength, seed)
    media = video.permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        want = models.official(**{**second, "timesteps": [0.4219]}, prompt=PROMPT, negative_prompt=NEGATIVE,
                               prompt_attention_mask=None, negative_prompt_attention_mask=None,
                               skip_layer_strategy=STG["attention_values"],
                               generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                               callback_on_step_end=None, num_frames=17, frame_rate=FPS, conditioning_items=None,
                               is_video=True, vae_per_channel_normalize=True, image_cond_noise_scale=0.15,
                               mixed_precision=False, offload_to_cpu=False, enhance_prompt=False,
                               stochastic_sampling=False, height=96, width=128, media_items=media).images
    assert res.latents.shape == want.shape == (1, LATENT_CHANNELS, 3, 3, 4)
    err = rel_err(res.latents, want)
    print(f"[multi-scale v2v, strength {strength}: the second pass alone] latents rel err {err:.3e}")
    assert err <= TOL
    assert not res.settings["multi_scale"] and [p["timesteps"] for p in res.settings["passes"]] == [(0.4219,)]
    assert res.video.shape == (17, 96, 128, 3)


# --- determinism, noise, encode, tokens ----------------------------------------------------------------------

SMALL = dict(height=64, width=64, num_frames=9, steps=3)

_SECOND_PROCESS = """
import sys, torch
from ltxcli.tiny import build_pipeline
torch.set_num_threads(int(sys.argv[3]))
pipe = build_pipeline(torch.device("cpu"), torch.float32)
res = pipe.generate("a red car", height=64, width=64, num_frames=9, steps=3, seed=int(sys.argv[2]))
torch.save({"video": res.video, "latents": res.latents}, sys.argv[1])
"""


def test_same_seed_is_identical_twice_and_in_a_second_process(tiny: Pipeline, tmp_path: Path) -> None:
    a = tiny.generate("a red car", seed=123, **SMALL)
    b = tiny.generate("a red car", seed=123, **SMALL)
    assert torch.equal(a.video, b.video) and torch.equal(a.latents, b.latents)
    assert a.seed == 123
    other = tiny.generate("a red car", seed=124, **SMALL)
    assert not torch.equal(a.latents, other.latents)

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run.pt"
    threads = str(torch.get_num_threads())
    subprocess.run([sys.executable, "-c", _SECOND_PROCESS, str(out), "123", threads], check=True, cwd=root,
                   env=env, timeout=300)
    saved = torch.load(out)
    assert torch.equal(saved["latents"], a.latents)
    assert torch.equal(saved["video"], a.video)


def test_explicit_noise_equals_the_seed_draw(tiny: Pipeline) -> None:
    # the official draw: randn [1, f*h*w, C] from a CPU generator, rearranged to [1, C, f, h, w]
    f, h, w, ch = 2, 2, 2, LATENT_CHANNELS
    draw = torch.randn((1, f * h * w, ch), generator=torch.Generator().manual_seed(77))
    noise = draw.transpose(1, 2).reshape(1, ch, f, h, w)
    by_seed = tiny.generate("a cat", seed=77, **SMALL)
    explicit = tiny.generate("a cat", seed=77, noise=noise, **SMALL)
    assert torch.equal(explicit.latents, by_seed.latents) and torch.equal(explicit.video, by_seed.video)
    # the seed then only drives the decode noise
    other_seed = tiny.generate("a cat", seed=78, noise=noise, **SMALL)
    assert torch.equal(other_seed.latents, by_seed.latents)
    assert not torch.equal(other_seed.video, by_seed.video)
    with pytest.raises(ValueError, match="noise must have shape"):
        tiny.generate("a cat", seed=77, noise=noise[:, :, :1], **SMALL)


def test_explicit_noise_is_not_written_to(tiny: Pipeline) -> None:
    """Conditioning works in place on the latents: a caller's float32 CPU noise must come back unchanged."""
    noise = torch.randn(1, LATENT_CHANNELS, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    kept = noise.clone()
    image = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(6))
    first = tiny.generate("a cat", seed=7, noise=noise, conditions=[Condition(image, 0, 0.5)], **SMALL)
    assert torch.equal(noise, kept)
    again = tiny.generate("a cat", seed=7, noise=noise, conditions=[Condition(image, 0, 0.5)], **SMALL)
    assert torch.equal(again.latents, first.latents)


def test_video_input_gives_the_length_size_and_rate_as_ltx_v2v(tiny: Pipeline, tmp_path: Path) -> None:
    """With a ``video`` and no num_frames / size / frame rate the input's are taken (the tiny preset's 17 frames
    at 128x192, 24 fps would need more frames than the input has), for a file and a tensor alike, and the
    caller's request is left as given."""
    from ltxcli import media
    from ltxcli.request import GenerationRequest

    frames = torch.rand(9, 32, 64, 3, generator=torch.Generator().manual_seed(3))
    clip = media.write_video(tmp_path / "clip.mp4", frames, 20)
    res = tiny.generate("a dog", video=clip, steps=2, seed=1)
    assert tuple(res.video.shape) == (9, 32, 64, 3) and res.settings["frame_rate"] == 20
    req = GenerationRequest("a dog", video=frames, steps=2, seed=1)
    assert tuple(tiny.run(req).video.shape) == (9, 32, 64, 3)
    assert req.num_frames is None and req.height is None and req.frame_rate is None


def test_a_video_input_with_everything_given_is_not_read_for_defaults(tmp_path: Path, monkeypatch) -> None:
    """``ltx v2v`` and ``run_batch`` fill the length, size and rate before the run: resolving it then reads nothing
    of the input again (its timestamps, its frames) for defaults that are all given."""
    from ltxcli import media, source
    from ltxcli.presets import TINY_PRESET
    from ltxcli.request import GenerationRequest

    clip = media.write_video(tmp_path / "clip.mp4", torch.rand(9, 32, 64, 3), 20)
    given = GenerationRequest("a dog", video=clip, num_frames=9, height=32, width=64, frame_rate=20)
    reads: list[str] = []
    monkeypatch.setattr(media, "check_constant_rate", lambda *a, **k: reads.append("timestamps"))
    monkeypatch.setattr(media, "source_frame_count", lambda *a, **k: reads.append("frames") or 9)
    assert source.with_source_defaults(given, TINY_PRESET) is given and reads == []
    source.with_source_defaults(GenerationRequest("a dog", video=clip, num_frames=9, height=32, width=64), TINY_PRESET)
    assert reads == ["timestamps", "frames"]  # the rate left open: the input is read for it


def test_decode_of_the_result_latents_reproduces_the_video(tiny: Pipeline) -> None:
    res = tiny.generate("a cat", seed=31, decode_timestep=0.05, decode_noise_scale=0.025, **SMALL)
    again = tiny.decode(res.latents, timestep=0.05, noise_scale=0.025, seed=31)
    assert torch.equal(again, res.video)
    assert not torch.equal(tiny.decode(res.latents, timestep=0.05, noise_scale=0.025, seed=32), res.video)


def test_decode_reproduces_a_tone_mapped_video(tiny: Pipeline) -> None:
    """The 0.9.8 13B distilled presets tone-map the latents before decoding (ratio 0.6 in the last pass);
    ``res.latents`` are from before it, so decoding them back needs the ratio too."""
    res = tiny.generate("a cat", seed=31, decode_timestep=0.05, decode_noise_scale=0.025,
                        tone_map_compression_ratio=0.6, **SMALL)
    again = tiny.decode(res.latents, timestep=0.05, noise_scale=0.025, seed=31, tone_map_compression_ratio=0.6)
    assert torch.equal(again, res.video)
    assert not torch.equal(tiny.decode(res.latents, timestep=0.05, noise_scale=0.025, seed=31), res.video)


def test_encode_and_decode_refuse_what_would_make_garbage(tiny: Pipeline) -> None:
    """uint8 frames (as streamed results and most image libraries give them) wrapped around in ``* 2 - 1`` and
    encoded to garbage; a NaN, infinite or negative decode timestep, or a noise scale outside [0, 1], decoded
    without a word (NaN: to a NaN video). Each is a ValueError, as the same values in a request are."""
    video = torch.rand(9, 64, 64, 3)
    with pytest.raises(ValueError, match=r"float.*uint8.*255"):
        tiny.encode((video * 255).to(torch.uint8))
    latents = tiny.encode(video)
    for kw, match in ((dict(timestep=float("nan")), "decode_timestep=nan"), (dict(timestep=-1.0), "decode_timestep"),
                      (dict(noise_scale=1.5), "decode_noise_scale=1.5"), (dict(noise_scale=-0.1), "in \\[0, 1\\]")):
        with pytest.raises(ValueError, match=match):
            tiny.decode(latents, **kw)


def test_full_strength_image_latents_equal_encode(tiny: Pipeline) -> None:
    image = pixels(1, 64, 96, seed=21)
    res = tiny.generate("a dog", conditions=[Condition(image, 0, 1.0)], image_cond_noise_scale=0.0, seed=5,
                        height=64, width=96, num_frames=17, steps=3)
    want = tiny.encode(image)
    assert want.shape == (1, LATENT_CHANNELS, 1, 2, 3)
    assert torch.equal(res.latents[:, :, :1], want)
    # the conditioning noise (default 0.15) moves them
    noisy = tiny.generate("a dog", conditions=[Condition(image, 0, 1.0)], seed=5, height=64, width=96,
                          num_frames=17, steps=3)
    assert not torch.equal(noisy.latents[:, :, :1], want)


class _Spy:
    """Records the transformer's token counts and the coordinates given to its RoPE tables."""

    def __init__(self, pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tokens: list[int] = []
        self.coords: list[torch.Tensor] = []
        original = pipe.transformer.rope_tables

        def rope_tables(grid: torch.Tensor):
            self.coords.append(grid.clone())
            return original(grid)

        monkeypatch.setattr(pipe.transformer, "rope_tables", rope_tables)
        self.handle = pipe.transformer.register_forward_pre_hook(
            lambda mod, args: self.tokens.append(args[0].shape[1])
        )


def test_keyframe_adds_tokens_at_its_time(tiny: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(tiny, monkeypatch)
    try:
        tiny.generate("a bird", conditions=[Condition(pixels(1, 64, 64, seed=1), 16, 0.9)], seed=3,
                      height=64, width=64, num_frames=17, steps=2)
    finally:
        spy.handle.remove()
    # 17 frames -> 3 latent frames of 2x2 tokens; the keyframe adds 1 latent frame of 2x2 tokens, first
    assert spy.tokens == [12 + 4, 12 + 4]
    grid = spy.coords[0][0]  # [3, N]: time in seconds, y and x in pixels
    t, y, x = grid
    expected_t = torch.tensor([16.0] * 4 + [0.0] * 4 + [1.0] * 4 + [9.0] * 4) * torch.tensor(1 / 24)
    torch.testing.assert_close(t, expected_t, rtol=0, atol=1e-7)
    assert y.tolist() == [0, 0, 32, 32] * 4 and x.tolist() == [0, 32, 0, 32] * 4


def test_video_segment_adds_prefix_tokens_and_places_its_body(tiny: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    segment = pixels(17, 64, 64, seed=2)
    spy = _Spy(tiny, monkeypatch)
    try:
        res = tiny.generate("a river", conditions=[Condition(segment, 8, 1.0)], image_cond_noise_scale=0.0, seed=4,
                            height=64, width=64, num_frames=33, steps=2)
    finally:
        spy.handle.remove()
    # 33 frames -> 5 latent frames (20 tokens); the 17-frame segment encodes to 3 latent frames: the first
    # two become 8 extra tokens at pixel times 8 + {0, 1}, the third replaces latent frame 8 // 8 + 2 = 3.
    assert spy.tokens == [28, 28]
    t = spy.coords[0][0, 0]
    want_t = torch.tensor([8.0] * 4 + [9.0] * 4 + [0.0] * 4 + [1.0] * 4 + [9.0] * 4 + [17.0] * 4 + [25.0] * 4)
    torch.testing.assert_close(t, want_t * torch.tensor(1 / 24), rtol=0, atol=1e-7)
    enc = tiny.encode(segment)
    assert torch.equal(res.latents[:, :, 3], enc[:, :, 2])


# --- guidance switches ------------------------------------------------------------------------------------------


def _gen(pipe: Pipeline, **kw: Any) -> torch.Tensor:
    args = dict(SMALL, seed=9, negative_prompt="dark night", guidance_scale=3.0, stg_scale=1.0,
                rescale_scale=0.7, stg_blocks=[1])
    args.update(kw)
    return pipe.generate("a horse runs", **args).latents


def test_cfg_changes_output_and_vanishes_at_one(tiny: Pipeline) -> None:
    base = _gen(tiny)
    assert not torch.equal(base, _gen(tiny, negative_prompt="snow"))  # CFG uses the negative prompt
    assert not torch.equal(base, _gen(tiny, guidance_scale=1.0))
    # guidance 1 (official: cfg > 1 runs the unconditional branch) ignores the negative prompt entirely
    assert torch.equal(_gen(tiny, guidance_scale=1.0), _gen(tiny, guidance_scale=1.0, negative_prompt="snow"))


def test_stg_changes_output_and_vanishes_at_zero(tiny: Pipeline) -> None:
    base = _gen(tiny)
    assert not torch.equal(base, _gen(tiny, stg_scale=0.0))
    assert not torch.equal(base, _gen(tiny, stg_blocks=[0]))
    for mode in ("attention_skip", "transformer_block"):
        assert not torch.equal(base, _gen(tiny, stg_mode=mode))
    # scale 0: no perturbed branch, so blocks, mode and rescaling have no effect
    off = _gen(tiny, stg_scale=0.0)
    assert torch.equal(off, _gen(tiny, stg_scale=0.0, stg_blocks=[0], stg_mode="transformer_block"))
    assert torch.equal(off, _gen(tiny, stg_scale=0.0, rescale_scale=0.3))


def test_rescale_changes_output_and_vanishes_when_neutral(tiny: Pipeline) -> None:
    base = _gen(tiny)  # rescale 0.7
    plain = _gen(tiny, rescale_scale=1.0)
    assert not torch.equal(base, plain)
    # official: rescaling runs only for scale != 1, and scale 0 multiplies by exactly 1 -> both are neutral
    assert torch.equal(plain, _gen(tiny, rescale_scale=0.0))


# --- sizes ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "f", "latent"), [(50, 70, 14, (3, 2, 3)), (64, 32, 1, (1, 2, 1)),
                                                     (33, 65, 9, (2, 2, 3))])
def test_padding_and_cropping_give_the_requested_shape(tiny: Pipeline, h: int, w: int, f: int, latent) -> None:
    res = tiny.generate("a tree", height=h, width=w, num_frames=f, steps=2, seed=1)
    assert res.video.shape == (f, h, w, 3)
    assert res.video.dtype == torch.float32 and res.video.min() >= 0 and res.video.max() <= 1
    assert res.latents.shape == (1, LATENT_CHANNELS, *latent)


# --- validation ------------------------------------------------------------------------------------------------


def _cond(frame: int = 0, strength: float = 1.0, n: int = 1) -> list[Condition]:
    return [Condition(torch.full((n, 64, 64, 3), 0.5), frame, strength)]


INVALID = [
    (dict(height=0), "height=0"),
    (dict(height=-32), "height=-32"),
    (dict(width=0), "width=0"),
    (dict(num_frames=0), "num_frames=0"),
    (dict(num_frames=-9), "num_frames=-9"),
    (dict(height=2049), "position range"),  # pads to 2080 > 2048 px
    (dict(width=4096), "position range"),
    (dict(num_frames=500, frame_rate=24), "position range"),  # 20.7 s > 20 s
    (dict(conditions=_cond(strength=1.5)), "strength"),
    (dict(conditions=_cond(strength=-0.1)), "strength"),
    (dict(conditions=_cond(frame=9)), r"condition a Tensor: frame=9 must be in \[0, 8\]"),  # 9 frames: 0..8
    (dict(conditions=_cond(frame=-1)), r"condition a Tensor: frame=-1 must be in \[0, 8\]"),
    (dict(conditions=_cond(frame=4, n=9), num_frames=17), "multiple of 8"),
    (dict(stg_blocks=[2]), "do not exist"),  # the tiny transformer has blocks 0-1
    (dict(stg_blocks=[-1]), "do not exist"),
    (dict(steps=0), "steps=0"),
    (dict(timesteps=[0.5, 0.9]), "decreasing"),
    (dict(guidance_scale=-1.0), "guidance_scale"),
    (dict(image_cond_noise_scale=1.5), "image_cond_noise_scale"),
    (dict(decode_noise_scale=-0.1), "decode_noise_scale"),
    (dict(seed=-1), "seed"),
    (dict(first_pass={}), "upsampler"),
]


@contextlib.contextmanager
def model_calls(pipe: Pipeline):
    """Names of the models run inside the block (the VAE encoder is entered through its ``conv_in``)."""
    calls: list[str] = []
    modules = {
        "text": pipe.text_encoder.model, "transformer": pipe.transformer,
        "vae.encoder": pipe.vae.encoder.conv_in, "vae.decoder": pipe.vae.decoder,
    }
    handles = [m.register_forward_pre_hook(lambda *_, n=name: calls.append(n)) for name, m in modules.items()]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def test_model_call_spy_sees_every_model(tiny: Pipeline) -> None:
    with model_calls(tiny) as calls:
        tiny.generate("a cat", conditions=_cond(), **dict(SMALL, steps=1), seed=1)
    assert set(calls) == {"text", "transformer", "vae.encoder", "vae.decoder"}


@pytest.mark.parametrize(("kwargs", "match"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_requests_fail_before_any_model_work(tiny: Pipeline, kwargs: dict, match: str) -> None:
    args = dict(SMALL, seed=1)
    args.update(kwargs)
    with model_calls(tiny) as calls, pytest.raises(ValueError, match=match):
        tiny.generate("a cat", **args)
    assert calls == []
