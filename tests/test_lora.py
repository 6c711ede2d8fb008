"""LoRA: every key format against diffusers' own loader, scales that add, a bit-exact unload, every error, the
registry, the request/record plumbing and ``ltx generate --lora`` through a subprocess.

The reference is diffusers' ``LTXVideoLoraLoaderMixin.load_lora_weights`` + ``set_adapters`` (PEFT layers that add
``scale * B(A(x))`` at every forward) on a diffusers ``LTXVideoTransformer3DModel`` holding the same weights,
converted from the official layout by diffusers' own ``convert_ltx_transformer_checkpoint_to_diffusers``. The LoRA
files are built here with random A/B (B is not zero, so a LoRA visibly changes the output).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_harness import assert_one_error_line, enter_cli_env, ltx, memoised_loader
from safetensors.torch import load_file, save_file
from tiny_models import one_thread, randomise_scaled  # noqa: F401  (one_thread: a module-scoped autouse fixture)

import ltxcli
from ltxcli.adapters.lora import LoraMismatchError, LoraSpec, fetch_loras, lora_spec, parse_lora
from ltxcli.adapters.lora_merge import LoraFileError, apply_loras, linear_shapes, merger_for
from ltxcli.loading import load_transformer, save_official_checkpoint
from ltxcli.models.configs import TransformerConfig
from ltxcli.models.fp8 import FP8Linear, quantize_e4m3
from ltxcli.models.rope import latent_coords, pixel_coords
from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.weights import RegistryError, UnknownWeightsError, load_registry
from ltxcli.weights.registry import parse_registry

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")
from diffusers import LTXVideoTransformer3DModel  # noqa: E402
from diffusers.loaders import LTXVideoLoraLoaderMixin  # noqa: E402
from diffusers.loaders.single_file_utils import convert_ltx_transformer_checkpoint_to_diffusers  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CFG = TransformerConfig(num_attention_heads=2, attention_head_dim=12, num_layers=2, in_channels=8, out_channels=8,
                        cross_attention_dim=24, caption_channels=16)
TOL = 1e-5
BLOCK_TARGETS = [f"transformer_blocks.{i}.{m}" for i in range(CFG.num_layers) for m in (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
    "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")]
# outside the blocks: official name -> diffusers name
OUTSIDE = {"patchify_proj": "proj_in", "adaln_single.linear": "time_embed.linear",
           "adaln_single.emb.timestep_embedder.linear_1": "time_embed.emb.timestep_embedder.linear_1",
           "caption_projection.linear_1": "caption_projection.linear_1", "proj_out": "proj_out"}
SHARED_OUTSIDE = [k for k, v in OUTSIDE.items() if k == v]  # spelled alike in both models


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --- models and inputs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny transformer as an official single file (float32 and bfloat16 copies) and its diffusers state."""
    tmp = tmp_path_factory.mktemp("lora-base")
    model = randomise_scaled(LTXVideoTransformer(CFG), 5)
    f32, bf16 = tmp / "tiny-f32.safetensors", tmp / "tiny-bf16.safetensors"
    save_official_checkpoint(f32, transformer=model)
    save_official_checkpoint(bf16, transformer=model.to(torch.bfloat16))
    official = {f"model.diffusion_model.{k}": v.clone() for k, v in load_transformer(f32).state_dict().items()}
    return {"f32": f32, "bf16": bf16, "diffusers": convert_ltx_transformer_checkpoint_to_diffusers(official),
            "tmp": tmp, "shapes": linear_shapes(load_transformer(f32))}


def diffusers_twin(base: dict[str, Any]) -> LTXVideoTransformer3DModel:
    ref = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24,
        num_layers=2, caption_channels=16)
    missing, unexpected = ref.load_state_dict(base["diffusers"], strict=False)
    assert not missing and not unexpected
    return ref.eval()


class _Holder(LTXVideoLoraLoaderMixin):
    """What ``load_lora_weights`` / ``set_adapters`` need of a pipeline: its ``transformer`` (not offloaded)."""

    hf_device_map = None

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self.components = {"transformer": transformer}


def diffusers_with(base: dict[str, Any], files: list[tuple[Path, float]]) -> LTXVideoTransformer3DModel:
    ref = diffusers_twin(base)
    holder = _Holder(ref)
    names = []
    for i, (path, _) in enumerate(files):
        holder.load_lora_weights(load_file(str(path)), adapter_name=f"a{i}")
        names.append(f"a{i}")
    holder.set_adapters(names, [scale for _, scale in files])
    return ref


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    f, h, w, fps = 3, 2, 3, 25.0
    g = torch.Generator().manual_seed(2)
    coords = pixel_coords(latent_coords(f, h, w), causal_fix=False)[None].repeat(2, 1, 1)
    coords[:, 0] = coords[:, 0] * (1.0 / fps)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    return {"x": torch.randn(2, f * h * w, 8, generator=g), "text": torch.randn(2, 7, 16, generator=g),
            "mask": mask, "t": torch.tensor([0.999, 0.4375]), "coords": coords, "fhw": torch.tensor([f, h, w])}


def ours_out(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(x["x"], x["text"], x["t"][:, None], indices_grid=x["coords"],
                     encoder_attention_mask=x["mask"]).float()


def diffusers_out(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    f, h, w = x["fhw"].tolist()
    with torch.no_grad():
        return model(hidden_states=x["x"], encoder_hidden_states=x["text"], timestep=x["t"] * 1000,
                     encoder_attention_mask=x["mask"], num_frames=f, height=h, width=w, video_coords=x["coords"],
                     return_dict=False)[0]


# --- LoRA files ---------------------------------------------------------------------------------------------------


def lora_pairs(shapes: dict[str, tuple[int, int]], targets: list[str], rank: int, seed: int
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random ``(A [rank, in], B [out, rank])`` per official module name."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in targets:
        o, i = shapes[name]
        out[name] = (torch.randn(rank, i, generator=g) / i**0.5, 0.5 * torch.randn(o, rank, generator=g) / rank**0.5)
    return out


def write(path: Path, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], form: str, alpha: float | None = None
          ) -> Path:
    """``pairs`` in one key format: peft (diffusers names, ``transformer.``), comfyui (official names,
    ``diffusion_model.``), comfyui-diffusers (diffusers names, ``diffusion_model.``), bare, kohya."""
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b) in pairs.items():
        dname = next((d + name[len(o):] for o, d in OUTSIDE.items() if name == o), name)
        if form == "kohya":
            stem = "lora_unet_" + (dname if name == "patchify_proj" else name).replace(".", "_")
            tensors[f"{stem}.lora_down.weight"], tensors[f"{stem}.lora_up.weight"] = a, b
            if alpha is not None:
                tensors[f"{stem}.alpha"] = torch.tensor(alpha)
            continue
        stem = {"peft": f"transformer.{dname}", "comfyui": f"diffusion_model.{name}",
                "comfyui-diffusers": f"diffusion_model.{dname}", "bare": name}[form]
        tensors[f"{stem}.lora_A.weight"], tensors[f"{stem}.lora_B.weight"] = a, b
    save_file(tensors, str(path))
    return path


def merge(model: torch.nn.Module, files: list[tuple[Path, float]]) -> list[dict[str, object]]:
    return apply_loras(model, fetch_loras([LoraSpec(str(p), s) for p, s in files]))


# --- parity with diffusers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["peft", "comfyui"])
def test_forward_matches_diffusers_load_lora_weights(base, inputs, form) -> None:
    """The PEFT file (diffusers names) and the ComfyUI file (official names, ``patchify_proj`` and
    ``adaln_single`` included) against diffusers given the same matrices under its own names."""
    targets = BLOCK_TARGETS + list(OUTSIDE)
    pairs = lora_pairs(base["shapes"], targets, rank=4, seed=11)
    ours_file = write(base["tmp"] / f"{form}.safetensors", pairs, form)
    ref_file = write(base["tmp"] / f"{form}-ref.safetensors", pairs, "peft")
    model = load_transformer(base["f32"])
    plain = ours_out(model, inputs)
    merge(model, [(ours_file, 0.7)])
    got = ours_out(model, inputs)
    want = diffusers_out(diffusers_with(base, [(ref_file, 0.7)]), inputs)
    err = rel(got, want)
    print(f"\nLoRA {form} file vs diffusers load_lora_weights + set_adapters(0.7): rel err {err:.3e}")
    assert err <= TOL
    assert rel(plain, want) > 1e-2  # the LoRA changes the output well beyond the tolerance


def test_comfyui_file_as_diffusers_loads_it(base, inputs) -> None:
    """diffusers' own ComfyUI path (``diffusion_model.`` swapped for ``transformer.``) on a file whose names it
    knows, the blocks plus ``caption_projection`` and ``proj_out``; the diffusers spelling ``proj_in`` under the
    ComfyUI prefix goes through the loader's key rules here."""
    pairs = lora_pairs(base["shapes"], BLOCK_TARGETS + SHARED_OUTSIDE + ["patchify_proj"], rank=3, seed=12)
    path = write(base["tmp"] / "comfy-direct.safetensors", pairs, "comfyui-diffusers")
    model = load_transformer(base["f32"])
    merge(model, [(path, 1.3)])
    err = rel(ours_out(model, inputs), diffusers_out(diffusers_with(base, [(path, 1.3)]), inputs))
    print(f"\nLoRA ComfyUI file loaded by diffusers itself, scale 1.3: rel err {err:.3e}")
    assert err <= TOL


def test_two_loras_add_like_diffusers_adapters(base, inputs) -> None:
    shapes = base["shapes"]
    a = write(base["tmp"] / "two-a.safetensors", lora_pairs(shapes, BLOCK_TARGETS, 4, 21), "peft")
    b_pairs = lora_pairs(shapes, [*BLOCK_TARGETS[:6], "proj_out"], 2, 22)
    b = write(base["tmp"] / "two-b.safetensors", b_pairs, "comfyui")
    b_ref = write(base["tmp"] / "two-b-ref.safetensors", b_pairs, "peft")
    model = load_transformer(base["f32"])
    original = {k: v.clone() for k, v in model.state_dict().items()}
    merge(model, [(a, 0.5), (b, -0.3)])
    err = rel(ours_out(model, inputs), diffusers_out(diffusers_with(base, [(a, 0.5), (b_ref, -0.3)]), inputs))
    print(f"\ntwo LoRAs (0.5, -0.3) vs diffusers' two adapters: rel err {err:.3e}")
    assert err <= TOL
    # each weight: W + 0.5 dA - 0.3 dB, in float64 as the independent reference
    pa, pb = lora_pairs(shapes, BLOCK_TARGETS, 4, 21), b_pairs
    for name in BLOCK_TARGETS:
        want = original[f"{name}.weight"].double() + 0.5 * (pa[name][1].double() @ pa[name][0].double())
        if name in pb:
            want -= 0.3 * (pb[name][1].double() @ pb[name][0].double())
        got = model.get_submodule(name).weight
        assert got.dtype == torch.float32 and rel(got, want) <= 1e-6, name


@pytest.mark.parametrize("form", ["kohya", "bare", "comfyui-diffusers"])
def test_other_formats_equal_the_peft_form(base, inputs, form) -> None:
    """kohya (``lora_down``/``lora_up``/``alpha``: factor alpha/rank, here 0.5) and the bare and
    diffusers-spelled-ComfyUI files give the same weights as the PEFT file with that factor folded into B."""
    targets = BLOCK_TARGETS + list(OUTSIDE)
    pairs = lora_pairs(base["shapes"], targets, rank=4, seed=31)
    alpha, factor = (2.0, 0.5) if form == "kohya" else (None, 1.0)
    path = write(base["tmp"] / f"other-{form}.safetensors", pairs, form, alpha=alpha)
    peft = write(base["tmp"] / f"other-{form}-peft.safetensors", {k: (a, b * factor) for k, (a, b) in pairs.items()},
                 "peft")
    one, two = load_transformer(base["f32"]), load_transformer(base["f32"])
    merge(one, [(path, 0.8)])
    merge(two, [(peft, 0.8)])
    for name in targets:
        w1, w2 = one.get_submodule(name).weight, two.get_submodule(name).weight
        assert rel(w1, w2) <= 1e-6, name
    err = rel(ours_out(one, inputs), ours_out(two, inputs))
    print(f"\nLoRA {form} file vs the PEFT form: rel err {err:.3e}")
    assert err <= 1e-6


@pytest.mark.parametrize("saved", ["diffusers-metadata", "save-lora-adapter", "peft-dir"])
@pytest.mark.parametrize("config", [{"lora_alpha": 8, "alpha_pattern": {"attn2.to_v": 2}},
                                    {"lora_alpha": 6, "use_rslora": True}])
def test_peft_lora_alpha_saved_with_the_file_scales_like_peft(base, inputs, saved, config, tmp_path) -> None:
    """A LoRA trained with PEFT at ``lora_alpha != r`` (rank 4 here) carries its alpha in the PEFT config, not in
    ``.alpha`` keys: diffusers' ``save_lora_weights(transformer_lora_adapter_metadata=...)`` and the model's
    ``save_lora_adapter`` put it in the safetensors header, PEFT's ``save_pretrained`` in ``adapter_config.json``.
    The reference is PEFT itself: the diffusers transformer with the adapter attached, scaling ``alpha / r``
    (``/ sqrt(r)`` with rslora)."""
    from peft import LoraConfig, get_peft_model_state_dict

    ref = diffusers_twin(base)
    cfg = LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in"], **config)
    ref.add_adapter(cfg)
    g = torch.Generator().manual_seed(7)
    for name, p in ref.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero: a LoRA that changes nothing would prove nothing
            p.data = 0.3 * torch.randn(p.shape, generator=g)
    want = diffusers_out(ref, inputs)
    state = get_peft_model_state_dict(ref)
    if saved == "diffusers-metadata":
        LTXVideoLoraLoaderMixin.save_lora_weights(tmp_path, transformer_lora_layers=state,
                                                  transformer_lora_adapter_metadata=cfg.to_dict())
        path = tmp_path / "pytorch_lora_weights.safetensors"
        loaded = diffusers_twin(base)  # diffusers reads the file and its header the same way
        _Holder(loaded).load_lora_weights(str(path), adapter_name="x")
        assert rel(diffusers_out(loaded, inputs), want) <= TOL
    elif saved == "save-lora-adapter":  # the model's own save: bare keys, the config unprefixed
        ref.save_lora_adapter(str(tmp_path))
        path = tmp_path / "pytorch_lora_weights.safetensors"
    else:
        path = tmp_path / "adapter_model.safetensors"
        save_file({f"base_model.model.{k}": v for k, v in state.items()}, str(path))
        cfg.save_pretrained(str(tmp_path))
    model = load_transformer(base["f32"])
    merge(model, [(path, 1.0)])
    err = rel(ours_out(model, inputs), want)
    print(f"\nPEFT LoRA r=4 {config} saved as {saved}: rel err vs PEFT {err:.3e}")
    assert err <= TOL


def test_peft_folder_lora_is_recorded_by_its_weights_and_its_config(base, tmp_path) -> None:
    """PEFT's ``adapter_model.safetensors`` takes its alpha from the ``adapter_config.json`` beside it, but the
    record's sha256 was the safetensors' alone: a run with another lora_alpha (other frames) recorded the same
    LoRA, and a process that had read the folder once kept merging the first alpha (its cache knew the file by the
    safetensors' size and time only). The record's sha256 covers both files, the weights' bytes first."""
    pairs = lora_pairs(base["shapes"], BLOCK_TARGETS, 4, 61)
    path = write(tmp_path / "adapter_model.safetensors", pairs, "peft")
    config = tmp_path / "adapter_config.json"
    model = load_transformer(base["f32"])
    q = model.transformer_blocks[0].attn1.to_q
    original = q.weight.detach().clone()
    deltas, shas = [], []
    for alpha in (8, 2):
        config.write_text(json.dumps({"r": 4, "lora_alpha": alpha, "target_modules": ["to_q"]}))
        (rec,) = merge(model, [(path, 1.0)])
        deltas.append(q.weight.detach() - original)
        shas.append(rec["sha256"])
        assert rec["sha256"] == hashlib.sha256(path.read_bytes() + config.read_bytes()).hexdigest()
    a, b = pairs["transformer_blocks.0.attn1.to_q"]
    for delta, alpha in zip(deltas, (8, 2), strict=True):  # the config's alpha / r, merged each time
        assert torch.allclose(delta, alpha / 4 * (b @ a), atol=1e-5)
    assert shas[0] != shas[1]


# --- precision and unload ------------------------------------------------------------------------------------------


def test_unload_restores_bits_float32_and_bf16_kept(base) -> None:
    pairs = lora_pairs(base["shapes"], [*BLOCK_TARGETS, "patchify_proj"], 4, 41)
    path = write(base["tmp"] / "unload.safetensors", pairs, "comfyui")
    for source, keep in ((base["f32"], False), (base["bf16"], True)):
        model = load_transformer(source, dtype=torch.float32, keep_checkpoint_dtype=keep)
        before = {k: (v.clone(), v.dtype, v.data_ptr()) for k, v in model.state_dict().items()}
        q = model.transformer_blocks[0].attn1.to_q
        stored = q.weight.detach().clone()
        merge(model, [(path, 0.9)])
        # a float32 run keeps the merged weight in float32 (also where bfloat16 was kept): exactly W + dW
        a, b = pairs["transformer_blocks.0.attn1.to_q"]
        assert q.weight.dtype == torch.float32
        assert torch.equal(q.weight, torch.addmm(stored.float(), b, a, alpha=0.9))
        merge(model, [(path, -0.2)])  # a new scale is merged from the original, not on top of the last merge
        assert torch.equal(q.weight, torch.addmm(stored.float(), b, a, alpha=-0.2))
        merger_for(model).apply([])
        after = model.state_dict()
        for k, (v, dtype, ptr) in before.items():
            assert after[k].dtype == dtype and torch.equal(after[k], v), k
            assert after[k].data_ptr() == ptr, k  # the very tensor: nothing re-read, nothing copied
        print(f"\nset_loras([]) on {source.name} (keep_checkpoint_dtype={keep}): every tensor bit-identical")


def test_bfloat16_compute_casts_back(base) -> None:
    model = load_transformer(base["bf16"], dtype=torch.bfloat16, keep_checkpoint_dtype=False)
    pairs = lora_pairs(base["shapes"], BLOCK_TARGETS, 4, 51)
    stored = model.transformer_blocks[1].ff.net[2].weight.detach().clone()
    merge(model, [(write(base["tmp"] / "bf16.safetensors", pairs, "peft"), 1.0)])
    a, b = pairs["transformer_blocks.1.ff.net.2"]
    got = model.transformer_blocks[1].ff.net[2].weight
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, torch.addmm(stored.float(), b, a).to(torch.bfloat16))  # float32 merge, one rounding


def test_fp8_merges_before_quantisation_and_unloads(base) -> None:
    cfg = TransformerConfig(num_attention_heads=2, attention_head_dim=16, num_layers=1, in_channels=8,
                            out_channels=8, cross_attention_dim=32, caption_channels=16)
    src = base["tmp"] / "fp8-base.safetensors"
    save_official_checkpoint(src, transformer=randomise_scaled(LTXVideoTransformer(cfg), 6).to(torch.bfloat16))
    plain = load_transformer(src, dtype=torch.bfloat16, keep_fp8=True)
    shapes = linear_shapes(load_transformer(src))
    targets = [f"transformer_blocks.0.{m}" for m in ("attn1.to_q", "attn2.to_v", "ff.net.0.proj")]
    pairs = lora_pairs(shapes, targets, 4, 61)
    refs = fetch_loras([LoraSpec(str(write(base["tmp"] / "fp8.safetensors", pairs, "comfyui")), 0.6)])
    merged = load_transformer(src, dtype=torch.bfloat16, keep_fp8=True,
                              before_fp8=lambda m: apply_loras(m, refs) and None)
    for name in targets:
        layer, ref = merged.get_submodule(name), plain.get_submodule(name)
        assert isinstance(layer, FP8Linear)
        bf16 = load_transformer(src, dtype=torch.bfloat16).get_submodule(name).weight
        a, b = pairs[name]
        codes, scale = quantize_e4m3(torch.addmm(bf16.float(), b, a, alpha=0.6).to(torch.bfloat16))
        assert torch.equal(layer.weight.view(torch.uint8), codes.view(torch.uint8)) and torch.equal(layer.weight_scale, scale)
        assert not torch.equal(layer.weight.view(torch.uint8), ref.weight.view(torch.uint8))
    merger_for(merged).apply([])  # back to what an fp8 load without the LoRA quantised
    apply_loras(plain, refs)  # after quantisation: merged into the dequantised codes, then unloaded
    merger_for(plain).apply([])
    fresh = load_transformer(src, dtype=torch.bfloat16, keep_fp8=True)
    for model in (merged, plain):
        for name in targets:
            got, want = model.get_submodule(name), fresh.get_submodule(name)
            assert torch.equal(got.weight.view(torch.uint8), want.weight.view(torch.uint8)), name
            assert torch.equal(got.weight_scale, want.weight_scale), name


def e4m3_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference per-tensor quantisation, by hand: scale ``amax / 448``, codes ``w / scale`` rounded to e4m3."""
    scale = w.abs().max() / 448
    return (w / scale).to(torch.float8_e4m3fn), scale


def test_fp8_storage_merges_into_the_codes_requantises_and_unloads(base, inputs) -> None:
    """--weights-dtype fp8: each targeted block linear ends as quantise(dequantise(quantise(W)) + s * B @ A)
    with a fresh per-tensor scale, bit for bit against the formula written here; a new strength merges from the
    original codes; no LoRA puts back the very codes and scales."""
    from ltxcli.models.fp8 import FP8StoredLinear

    wide = load_transformer(base["f32"], dtype=torch.float32)  # W, float32
    model = load_transformer(base["f32"], dtype=torch.float32, weights_fp8=True)
    before = {k: (v.clone(), v.data_ptr()) for k, v in model.state_dict().items()}
    scales0 = {n: model.get_submodule(n).weight_scale.clone() for n in BLOCK_TARGETS}
    pairs = lora_pairs(base["shapes"], BLOCK_TARGETS, 4, 71)
    path = write(base["tmp"] / "fp8-stored.safetensors", pairs, "comfyui")
    for strength in (0.8, -0.3):  # the second merges from the original codes, not on top of the first
        merge(model, [(path, strength)])
        reference = load_transformer(base["f32"], dtype=torch.float32)  # plain float32 layers
        err_requant = err_once = 0.0
        for name in BLOCK_TARGETS:
            a, b = pairs[name]
            w = wide.get_submodule(name).weight.detach()
            q0, s0 = e4m3_per_tensor(w)  # what the fp8 load stored
            # W' + strength * B @ A in float32 as the other merge tests write it (one addmm: its rounding is
            # that of the library's in-place addmm_, whose result decides the amax and so the new scale)
            q1, s1 = e4m3_per_tensor(torch.addmm(q0.float() * s0, b, a, alpha=strength))
            layer = model.get_submodule(name)
            assert isinstance(layer, FP8StoredLinear)
            assert torch.equal(layer.weight.view(torch.uint8), q1.view(torch.uint8)), name
            assert torch.equal(layer.weight_scale, s1), name
            reference.get_submodule(name).weight.data = q1.float() * s1
            exact = w + strength * (b @ a)
            q2, s2 = e4m3_per_tensor(exact)  # merged before quantisation, for the figure only
            err_requant = max(err_requant, rel(q1.float() * s1, exact))
            err_once = max(err_once, rel(q2.float() * s2, exact))
        # the layers widen the codes and scale them: the same forward as float32 layers holding those weights
        assert torch.equal(ours_out(model, inputs), ours_out(reference, inputs))
        print(f"\nfp8-stored LoRA {strength}: merged weight vs W + dW, worst layer: rel err {err_requant:.3e} "
              f"(quantised once from W + dW: {err_once:.3e})")
    merger_for(model).apply([])
    after = model.state_dict()
    for k, (v, ptr) in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k].view(torch.uint8) if v.dtype.itemsize == 1
                                                         else after[k], v.view(torch.uint8) if v.dtype.itemsize == 1
                                                         else v), k
        assert after[k].data_ptr() == ptr, k  # the very tensor
    for name in BLOCK_TARGETS:
        assert torch.equal(model.get_submodule(name).weight_scale, scales0[name]), name


def int8_per_row(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference per-row int8 quantisation, by hand: scale ``amax(|row|) / 127``, codes ``round(w / scale)``."""
    scale = w.abs().amax(dim=1) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def test_int8_storage_merges_into_the_codes_requantises_and_unloads(base, inputs) -> None:
    """--weights-dtype int8: each targeted block linear ends as quantise(dequantise(quantise(W)) + s * B @ A)
    with fresh per-row scales, bit for bit against the formula written here, within half a quantisation step of
    each rounding from merging into the float weight; a new strength merges from the original codes; no LoRA puts
    back the very codes and scales."""
    from ltxcli.models.int8 import Int8StoredLinear

    wide = load_transformer(base["f32"], dtype=torch.float32)  # W, float32
    model = load_transformer(base["f32"], dtype=torch.float32, weights_storage="int8")
    before = {n: (model.get_submodule(n).weight.data_ptr(), model.get_submodule(n).weight.clone(),
                  model.get_submodule(n).weight_scale.clone()) for n in BLOCK_TARGETS}
    pairs = lora_pairs(base["shapes"], BLOCK_TARGETS, 4, 72)
    path = write(base["tmp"] / "int8-stored.safetensors", pairs, "comfyui")
    for strength in (0.8, -0.3):  # the second merges from the original codes, not on top of the first
        merge(model, [(path, strength)])
        reference = load_transformer(base["f32"], dtype=torch.float32)  # plain float32 layers
        worst = 0.0
        for name in BLOCK_TARGETS:
            a, b = pairs[name]
            w = wide.get_submodule(name).weight.detach()
            q0, s0 = int8_per_row(w)  # what the int8 load stored
            q1, s1 = int8_per_row(torch.addmm(q0.float() * s0[:, None], b, a, alpha=strength))
            layer = model.get_submodule(name)
            assert isinstance(layer, Int8StoredLinear)
            assert torch.equal(layer.weight, q1) and torch.equal(layer.weight_scale, s1), name
            merged = q1.float() * s1[:, None]
            reference.get_submodule(name).weight.data = merged
            exact = w + strength * (b @ a)  # merged into the float weight; quantising it is off by <= s / 2
            assert ((merged - exact).abs() <= (s0 + s1)[:, None] * 0.5001 + 1e-6).all(), name
            worst = max(worst, rel(merged, exact))
        assert torch.equal(ours_out(model, inputs), ours_out(reference, inputs))
        print(f"\nint8-stored LoRA {strength}: merged weight vs W + dW, worst layer: rel err {worst:.3e}")
    merger_for(model).apply([])
    for name, (ptr, codes, scale) in before.items():
        layer = model.get_submodule(name)
        assert layer.weight.data_ptr() == ptr and torch.equal(layer.weight, codes), name  # the very tensor
        assert torch.equal(layer.weight_scale, scale), name


@pytest.mark.parametrize("storage", ["fp8", "int8"])
def test_fp8_storage_lora_at_load_equals_per_request(tmp_path, storage) -> None:
    """load_pipeline(weights_dtype="fp8" / "int8", loras=...) on a checkpoint gives the bits of a LoRA set per
    request; no LoRA gives the plain stored pipeline's video."""
    from tiny_t5 import make_tiny_text_encoder

    from ltxcli.tiny import build_pipeline

    tiny = build_pipeline(torch.device("cpu"), torch.float32)
    ckpt = tmp_path / "ckpt.safetensors"
    save_official_checkpoint(ckpt, transformer=tiny.transformer, vae=tiny.vae)
    te = make_tiny_text_encoder(tmp_path / "te")
    path = tiny_lora(tmp_path, 93)
    kw = {"height": 64, "width": 64, "num_frames": 9, "steps": 2, "seed": 3, "enhance_prompt": "off"}
    at_load = ltxcli.load_pipeline(ckpt, text_encoder=te, weights_dtype=storage, loras=[(str(path), 0.7)])
    plain = ltxcli.load_pipeline(ckpt, text_encoder=te, weights_dtype=storage)
    assert at_load.compute_record()["weights_dtype"] == plain.compute_record()["weights_dtype"] == storage
    styled = at_load.generate("a cat", **kw)
    assert styled.settings["loras"][0]["scale"] == 0.7
    per_request = plain.generate("a cat", loras=[(str(path), 0.7)], **kw)
    assert torch.equal(styled.latents, per_request.latents)
    base_video = plain.generate("a cat", loras=[], **kw)
    assert not torch.equal(base_video.latents, styled.latents)
    assert torch.equal(at_load.generate("a cat", loras=[], **kw).latents, base_video.latents)


# --- errors ------------------------------------------------------------------------------------------------------


def _with(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], extra: dict[str, torch.Tensor]) -> dict[str, Any]:
    t: dict[str, torch.Tensor] = {}
    for name, (a, b) in pairs.items():
        t[f"diffusion_model.{name}.lora_A.weight"], t[f"diffusion_model.{name}.lora_B.weight"] = a, b
    return {**t, **extra}


ERRORS = {
    "dora": ({"diffusion_model.transformer_blocks.0.attn1.to_q.dora_scale": torch.ones(1, 24)}, "DoRA"),
    "peft-dora": ({"transformer.transformer_blocks.0.attn1.to_q.lora_magnitude_vector": torch.ones(24)}, "DoRA"),
    "loha": ({"lora_unet_transformer_blocks_0_attn1_to_q.hada_w1_a": torch.ones(24, 2)}, "LoHa"),
    "lokr": ({"lora_unet_transformer_blocks_0_attn1_to_q.lokr_w1": torch.ones(2, 2)}, "LoKr"),
    "no-module": ({"diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight": torch.ones(2, 24),
                   "diffusion_model.transformer_blocks.7.attn1.to_q.lora_B.weight": torch.ones(24, 2)},
                  "key diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight matches no linear layer"),
    "not-linear": ({"transformer.scale_shift_table.lora_A.weight": torch.ones(2, 6)}, "matches no linear layer"),
    "13b-on-2b": ({"diffusion_model.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.ones(8, 4096),
                   "diffusion_model.transformer_blocks.0.attn2.to_k.lora_B.weight": torch.ones(4096, 8)},
                  "make a [4096, 4096] update, but transformer_blocks.0.attn2.to_k of this model is [24, 24]"),
    "half-pair": ({"diffusion_model.proj_out.lora_A.weight": torch.ones(2, 24)}, "no matching lora_B/lora_up"),
    "text-encoder": ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(2, 4)},
                     "targets the text encoder"),
    "full-weight": ({"diffusion_model.proj_out.weight": torch.ones(8, 24)}, "is not a LoRA tensor"),
    "diff": ({"diffusion_model.proj_out.diff": torch.ones(8, 24)}, "full weight difference"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_every_error_is_one_line_naming_the_key_and_changes_nothing(base, case) -> None:
    extra, fragment = ERRORS[case]
    good = lora_pairs(base["shapes"], BLOCK_TARGETS[:2], 2, 71)
    path = base["tmp"] / f"bad-{case}.safetensors"
    save_file(_with(good, extra), str(path))
    model = load_transformer(base["f32"])
    merge(model, [(write(base["tmp"] / "good.safetensors", good, "peft"), 1.0)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoraFileError) as e:
        merge(model, [(path, 1.0)])
    msg = str(e.value)
    print(f"\n{case}: {msg}")
    assert fragment in msg and "\n" not in msg and str(path) in msg
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the good LoRA stays merged


def test_pickle_and_changed_file_are_refused(base) -> None:
    model = load_transformer(base["f32"])
    pt = base["tmp"] / "style.pt"
    pt.write_bytes(b"\x80\x04")
    with pytest.raises(LoraFileError, match="pickle"):
        merge(model, [(pt, 1.0)])
    path = write(base["tmp"] / "sha.safetensors", lora_pairs(base["shapes"], BLOCK_TARGETS[:1], 2, 81), "peft")
    with pytest.raises(LoraFileError, match="differs from the requested"):
        apply_loras(model, fetch_loras([LoraSpec(str(path), 1.0, "0" * 64)]))


def test_specs_and_sources() -> None:
    assert parse_lora("style.safetensors:0.8") == LoraSpec("style.safetensors", 0.8)
    assert parse_lora("ltxv-13b-0.9.7-ic-lora-canny") == LoraSpec("ltxv-13b-0.9.7-ic-lora-canny", 1.0)
    assert parse_lora("C:\\loras\\x.safetensors:-0.3") == LoraSpec("C:\\loras\\x.safetensors", -0.3)
    assert lora_spec(("a.safetensors", 2)) == LoraSpec("a.safetensors", 2.0)
    record = {"name": "n", "path": "/w/n.safetensors", "sha256": "a" * 64, "scale": 0.5}  # a record's entry
    assert lora_spec(record) == LoraSpec("n", 0.5, "a" * 64)
    for bad in (("a", float("nan")), {"scale": 1}, 3):
        with pytest.raises(ValueError):
            lora_spec(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no such file, and not a name in weights\.toml"):
        fetch_loras([LoraSpec("missing/style.safetensors")])
    with pytest.raises(UnknownWeightsError, match=r"did you mean ltxv-13b-0\.9\.7-ic-lora-canny"):
        fetch_loras([LoraSpec("ltxv-13b-0.9.7-ic-lora-cany")])


# --- registry ---------------------------------------------------------------------------------------------------


def test_registry_lists_the_official_loras_with_their_base() -> None:
    reg = load_registry()
    loras = {e.name: e for e in reg.of_kind("lora")}
    assert set(loras) == {"ltxv-13b-0.9.7-distilled-lora128", "ltxv-13b-0.9.7-ic-lora-canny",
                          "ltxv-13b-0.9.7-ic-lora-depth", "ltxv-13b-0.9.7-ic-lora-pose",
                          "ltxv-13b-0.9.8-ic-lora-detailer"}
    assert loras["ltxv-13b-0.9.7-ic-lora-depth"].repo == "Lightricks/LTX-Video-ICLoRA-depth-13b-0.9.7"
    assert loras["ltxv-13b-0.9.8-ic-lora-detailer"].files[0].path == "ltxv-098-ic-lora-detailer-comfyui.safetensors"
    assert loras["ltxv-13b-0.9.7-distilled-lora128"].base[0] == "ltxv-13b-0.9.7-dev"
    for e in loras.values():
        assert e.base and all(reg[b].kind == "model" for b in e.base)
    raw = {"schema": 1, "weights": {
        "m": {"kind": "model", "description": "d", "repo": "o/r", "files": ["m.safetensors"], "preset": "tiny",
              "default": True},
        "l": {"kind": "lora", "description": "d", "repo": "o/r", "files": ["l.safetensors"], "base": ["x"]}}}
    with pytest.raises(RegistryError, match="base 'x' is not a model entry"):
        parse_registry(raw)
    del raw["weights"]["l"]["base"]
    with pytest.raises(RegistryError, match="names the models it is made for"):
        parse_registry(raw)


def test_registry_lora_on_another_model_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(tmp_path))
    for model in ("tiny", "ltxv-2b-0.9.8-distilled", str(tmp_path / "ltxv-13b-0.9.8-dev.safetensors")):
        with pytest.raises(LoraMismatchError, match=r"LoRA ltxv-13b-0\.9\.7-ic-lora-canny is made for "
                           r"ltxv-13b-0\.9\.7-dev, .*, not for (tiny|ltxv-2b-0\.9\.8-distilled|ltxv-13b-0\.9\.8-dev)$"):
            if model == "tiny":
                ltxcli.load_pipeline("tiny", loras=["ltxv-13b-0.9.7-ic-lora-canny"])
            else:
                ltxcli.resolve_spec(model, loras=["ltxv-13b-0.9.7-ic-lora-canny"], header=False)
    spec = ltxcli.resolve_spec("ltxv-13b-0.9.7-distilled", loras=["ltxv-13b-0.9.7-ic-lora-canny:0.9"], header=False)
    assert "ltxv-13b-0.9.7-ic-lora-canny" in spec.needed and spec.loras[0].scale == 0.9


# --- pipeline, request, record ------------------------------------------------------------------------------------


def tiny_lora(tmp: Path, seed: int = 91) -> Path:
    """A style LoRA for the built-in tiny model: attention and feed-forward of every block."""
    pipe = ltxcli.load_pipeline("tiny")
    shapes = linear_shapes(pipe.transformer)
    targets = [n for n in shapes if n.startswith("transformer_blocks.")]
    return write(tmp / "tiny-style.safetensors", lora_pairs(shapes, targets, 4, seed), "comfyui")


def test_pipeline_switches_loras_per_request_without_reloading(tmp_path) -> None:
    path = tiny_lora(tmp_path)
    pipe = ltxcli.load_pipeline("tiny", loras=[(str(path), 0.8)])
    transformer = pipe.transformer
    kw = {"height": 64, "width": 64, "num_frames": 9, "steps": 2, "seed": 3}
    styled = pipe.generate("a cat", **kw)
    rec = styled.settings["loras"]
    assert rec == [{"name": None, "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "scale": 0.8}]
    plain = pipe.generate("a cat", loras=[], **kw)
    assert plain.settings["loras"] == [] and pipe.transformer is transformer
    assert not torch.equal(styled.latents, plain.latents)
    again = pipe.run(ltxcli.GenerationRequest("a cat", loras=rec, **kw))  # a redo from the record
    assert torch.equal(again.latents, styled.latents)
    base_pipe = ltxcli.load_pipeline("tiny")
    assert torch.equal(base_pipe.generate("a cat", **kw).latents, plain.latents)


def _state(pipe: Any) -> dict[str, torch.Tensor]:
    """Every transformer tensor, float8 codes as their bytes (torch.equal compares them bit for bit then)."""
    return {k: (v.view(torch.uint8) if v.dtype.itemsize == 1 else v).clone()
            for k, v in pipe.transformer.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("storage", [None, "fp8", "int8"])
def test_pipeline_switches_back_and_forth_and_a_refused_lora_changes_nothing(tmp_path, storage) -> None:
    """set_loras A, then B with A at another scale, then A again: A's bits again; a list holding a LoRA made for
    another model size is refused naming the file and a key, merging nothing (A stays, the records too); scale 0
    and [] give the base bits back, and the same LoRA twice at 0.4 adds up to it once at 0.8."""
    pipe = ltxcli.load_pipeline("tiny", **({} if storage is None else {"weights_dtype": storage}))
    shapes = linear_shapes(pipe.transformer)
    blocks = [n for n in shapes if n.startswith("transformer_blocks.")]
    a = write(tmp_path / "a.safetensors", lora_pairs(shapes, blocks, 4, 101), "comfyui")
    b = write(tmp_path / "b.safetensors", lora_pairs(shapes, [*blocks[:3], "proj_out"], 2, 102), "peft")
    big = tmp_path / "other-size.safetensors"
    save_file({"diffusion_model.proj_out.lora_A.weight": torch.ones(2, 2048),
               "diffusion_model.proj_out.lora_B.weight": torch.ones(128, 2)}, str(big))
    base = _state(pipe)
    pipe.set_loras([f"{a}:0.8"])
    with_a, records = _state(pipe), list(pipe.lora_records)
    assert not _equal(with_a, base)
    pipe.set_loras([f"{b}:-0.5", f"{a}:0.3"])
    pipe.set_loras([f"{a}:0.8"])
    assert _equal(_state(pipe), with_a)
    with pytest.raises(LoraFileError) as e:
        pipe.set_loras([f"{a}:0.8", f"{big}:1.0"])
    assert str(big) in str(e.value) and "diffusion_model.proj_out.lora_A.weight" in str(e.value)
    assert _equal(_state(pipe), with_a) and pipe.lora_records == records
    assert pipe.lora_specs == (LoraSpec(str(a), 0.8),)
    pipe.set_loras([f"{a}:0"])
    assert _equal(_state(pipe), base)
    if storage is None:  # float32: W + 0.4 dA + 0.4 dA against W + 0.8 dA
        pipe.set_loras([f"{a}:0.4", f"{a}:0.4"])
        twice = _state(pipe)
        assert all(rel(twice[k], with_a[k]) <= 1e-6 for k in twice if not torch.equal(base[k], with_a[k]))
        assert [r["scale"] for r in pipe.lora_records] == [0.4, 0.4]
    pipe.set_loras([])
    assert _equal(_state(pipe), base)


def test_batch_lines_accept_loras(tmp_path) -> None:
    from ltxcli.batch import parse_batch
    from ltxcli.runner import build_items

    path = tiny_lora(tmp_path)
    rows = parse_batch("\n".join([
        json.dumps({"prompt": "a", "loras": [f"{path}:0.5"]}),
        json.dumps({"prompt": "b", "loras": [{"path": str(path), "scale": -0.3}]}),
        json.dumps({"prompt": "c"}), json.dumps({"prompt": "d", "loras": []})]))
    items = build_items(rows, defaults={"loras": ["x.safetensors:2"]})
    assert [it.loras for it in items] == [[LoraSpec(str(path), 0.5)], [LoraSpec(str(path), -0.3)],
                                          ["x.safetensors:2"], []]
    with pytest.raises(ValueError, match="batch line 1: loras must be a list"):
        parse_batch(json.dumps({"prompt": "a", "loras": "x"}))


# --- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_lora_through_subprocess(tmp_path) -> None:
    path = tiny_lora(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LTX_WEIGHTS_DIR": str(tmp_path / "weights"),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "styled.mp4"
    args = [sys.executable, "-m", "ltxcli", "generate", "a cat surfing", "--model", "tiny", "-o", str(out),
            "--lora", f"{path}:0.8", "--seed", "7", "--steps", "2", "--height", "64", "--width", "96",
            "--num-frames", "9", "--json"]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert obj["settings"]["loras"] == [{"name": None, "path": str(path), "sha256": sha, "scale": 0.8}]
    info = ltx("info", str(out), "--json")  # what `ltx info` reads back from the file
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["generation"]["loras"][0]["sha256"] == sha


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return enter_cli_env(tmp_path, monkeypatch, memoised_loader())


def test_cli_lora_with_fp8_weight_storage(cli_env) -> None:
    """In process (cli_harness): a subprocess only added its start-up."""
    path = tiny_lora(cli_env)
    proc = ltx("generate", "a cat surfing", "--model", "tiny", "-o", str(cli_env / "fp8.mp4"), "--lora",
               f"{path}:0.8", "--weights-dtype", "fp8", "--seed", "7", "--steps", "2", "--height", "64", "--width",
               "64", "--num-frames", "9", "--json")
    assert proc.exit_code == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["settings"]["loras"][0]["scale"] == 0.8 and obj["settings"]["loras"][0]["path"] == str(path)


def test_cli_lora_takes_a_peft_folder_as_its_weights_file(cli_env) -> None:
    """`--lora DIR` (PEFT's save_pretrained folder: adapter_model.safetensors and adapter_config.json) was refused
    as "not a file". It is that folder's adapter_model.safetensors (the config beside it gives the alpha), with
    or without a scale: recorded as that file is, and --skip-existing knows it again."""
    folder = cli_env / "style"
    folder.mkdir()
    weights = tiny_lora(cli_env).rename(folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 2}))
    sha = hashlib.sha256(weights.read_bytes() + (folder / "adapter_config.json").read_bytes()).hexdigest()
    args = ["generate", "a cat", "--model", "tiny", "--height", "64", "--width", "64", "--num-frames", "9",
            "--steps", "1", "--seed", "5", "--json"]
    for lora, scale in (("style:0.8", 0.8), ("style", 1.0)):
        r = ltx(*args, "--lora", lora, "-o", f"out{scale}.mp4")
        assert r.exit_code == 0, r.stderr
        # the record `--lora style/adapter_model.safetensors` makes (test_cli_lora_through_subprocess)
        assert json.loads(r.stdout)["settings"]["loras"] == [{"name": None, "path": str(weights), "sha256": sha,
                                                              "scale": scale}]
    again = ltx(*args, "--lora", "style:0.8", "-o", "out0.8.mp4", "--skip-existing")
    # known as this request's output (an unknown file is skipped too, with a warning that it holds another video)
    assert json.loads(again.stdout)["status"] == "skipped" and "other settings" not in again.stderr, again.stderr


@pytest.mark.parametrize(("lora", "fragment"), [
    ("missing.safetensors", "LoRA missing.safetensors: no such file, and not a name in weights.toml"),
    ("ltxv-13b-0.9.7-ic-lora-pose:0.5", "LoRA ltxv-13b-0.9.7-ic-lora-pose is made for ltxv-13b-0.9.7-dev"),
    ("t5-xxl", "that is a text encoder, not a LoRA"),
])
def test_cli_lora_errors_are_one_line(cli_env, lora, fragment) -> None:
    result = ltx("generate", "a cat", "--model", "tiny", "--lora", lora, "--height", "64", "--width", "64",
                 "--num-frames", "9", "--steps", "1")
    line = assert_one_error_line(result, 2)
    assert fragment in line, line
