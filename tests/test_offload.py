"""Offload modes: same outputs as no offload, hooks really run, modules come back unchanged.

CPU only: staging to ``"cpu:0"`` (which compares unequal to the ``"cpu"`` of host tensors) makes real copies,
so the hook and swap machinery is exercised as on a GPU; the ``meta`` device stands in for a second device
to check that tensors really move and come back.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ltxcli.models.configs import TransformerConfig
from ltxcli.models.rope import latent_coords, pixel_coords
from ltxcli.models.transformer import LTXVideoTransformer, STGMode
from ltxcli.models.vae import CausalVideoVAE
from ltxcli.offload import (
    Offload,
    SequentialOffload,
    enable_sequential_offload,
    free_text_encoder,
    is_freed,
    on_device,
    stage,
)
from ltxcli.tiny import tiny_vae_config

CFG = TransformerConfig(
    num_attention_heads=2, attention_head_dim=8, num_layers=3, in_channels=8, out_channels=8,
    cross_attention_dim=16, caption_channels=12,
)


def randomised_transformer() -> LTXVideoTransformer:
    torch.manual_seed(0)
    model = LTXVideoTransformer(CFG).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def transformer_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    f, h, w = 2, 2, 3
    grid = pixel_coords(latent_coords(f, h, w), causal_fix=True)[None].float()
    grid[:, 0] /= 25.0
    return {
        "x": torch.randn(3, f * h * w, 8, generator=g),
        "ctx": torch.randn(3, 5, 12, generator=g),
        "t": torch.rand(3, generator=g),
        "mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
        "grid": grid.expand(3, -1, -1),
    }


def run(model: LTXVideoTransformer, inp: dict[str, torch.Tensor]) -> torch.Tensor:
    skip = torch.ones(CFG.num_layers, 3)
    skip[1, 2] = 0  # STG on block 1 for the last batch element: every block still runs
    return model(
        inp["x"], inp["ctx"], inp["t"], indices_grid=inp["grid"], encoder_attention_mask=inp["mask"],
        skip_layer_mask=skip, skip_layer_strategy=STGMode.ATTENTION_VALUES,
    )


def snapshot(module: nn.Module) -> dict[str, tuple[int, torch.Tensor]]:
    return {k: (id(v), v.clone()) for k, v in [*module.named_parameters(), *module.named_buffers()]}


def assert_unchanged(module: nn.Module, before: dict[str, tuple[int, torch.Tensor]]) -> None:
    after = dict([*module.named_parameters(), *module.named_buffers()])
    assert after.keys() == before.keys()
    for k, (ident, value) in before.items():
        assert id(after[k]) == ident, f"{k} was replaced"
        assert after[k].device.type == "cpu"
        assert torch.equal(after[k], value), f"{k} changed"


# "cpu:0" compares unequal to the "cpu" that host tensors report, so offloading to it makes real copies (new
# storage) on a machine without a GPU: the tests below see the streaming itself, not a no-op.
STAGING = "cpu:0"


def test_sequential_offload_is_bit_identical_and_hooks_run() -> None:
    model = randomised_transformer()
    inp = transformer_inputs()
    before = snapshot(model)
    host_q = [b.attn1.to_q.weight for b in model.transformer_blocks]
    with torch.inference_mode():
        ref = run(model, inp)
        handle = enable_sequential_offload(model, STAGING)
        assert isinstance(handle, SequentialOffload)
        seen: list[int] = []

        # A probe behind the offload pre-hook: the running block computes with a staged copy of its weights
        # (same values, other storage) while every other block holds its host tensors.
        def probe(i: int):
            def hook(module: nn.Module, args: object) -> None:
                seen.append(i)
                staged = module.attn1.to_q.weight
                assert staged.data_ptr() != host_q[i].data_ptr() and torch.equal(staged, host_q[i])
                others = [b.attn1.to_q.weight is host_q[j] for j, b in enumerate(model.transformer_blocks)]
                assert others == [j != i for j in range(len(host_q))]

            return hook

        probes = [b.register_forward_pre_hook(probe(i)) for i, b in enumerate(model.transformer_blocks)]
        out1 = run(model, inp)
        out2 = run(model, inp)
        for p in probes:
            p.remove()
    assert torch.equal(out1, ref) and torch.equal(out2, ref)
    assert handle.loads == handle.releases == 2 * CFG.num_layers
    assert seen == [0, 1, 2, 0, 1, 2]
    handle.remove()
    with torch.inference_mode():
        assert torch.equal(run(model, inp), ref)
    assert handle.loads == 2 * CFG.num_layers  # hooks gone
    # the blocks hold their host tensors again; the parts outside them stay staged (documented), same values
    assert_unchanged(model.transformer_blocks, {k.removeprefix("transformer_blocks."): v for k, v in before.items()
                                                if k.startswith("transformer_blocks.")})
    rest = {k: v for k, v in model.named_parameters() if not k.startswith("transformer_blocks.")}
    assert rest and all(id(t) != before[k][0] and torch.equal(t, before[k][1]) for k, t in rest.items())


def test_sequential_offload_releases_after_an_exception() -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(3, 3), Boom())
    handle = enable_sequential_offload(model, "cpu", blocks=list(model))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="boom"):
        model(torch.randn(2, 3))
    assert handle.loads == handle.releases == 2
    handle.remove()


def test_sequential_offload_of_the_vae_decoder() -> None:
    torch.manual_seed(0)
    vae = CausalVideoVAE(tiny_vae_config()).eval()
    z = torch.randn(1, vae.latent_channels, 2, 1, 1, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = vae.decode(z, 0.05)
        handle = enable_sequential_offload(vae.decoder, STAGING)
        out = vae.decode(z, 0.05)
    assert torch.equal(out, ref)
    assert handle.loads == handle.releases == len(vae.decoder.up_blocks)
    handle.remove()


def test_on_device_moves_and_restores() -> None:
    model = randomised_transformer()
    model.register_buffer("extra", torch.arange(3.0))
    before = snapshot(model)
    with torch.inference_mode(), on_device(model, "meta") as m:
        assert m is model
        devices = {t.device.type for t in [*model.parameters(), *model.buffers()]}
        assert devices == {"meta"}
        assert isinstance(model.patchify_proj.weight, nn.Parameter)
    assert_unchanged(model, before)
    # An exception inside the block restores too.
    with pytest.raises(KeyError), on_device(model, "meta"):
        raise KeyError("boom")
    assert_unchanged(model, before)


def test_model_offload_stage_is_bit_identical() -> None:
    model = randomised_transformer()
    inp = transformer_inputs()
    host = model.patchify_proj.weight
    before = snapshot(model)
    with torch.inference_mode():
        ref = run(model, inp)
        with stage(model, STAGING, Offload.MODEL):
            staged = model.patchify_proj.weight
            assert staged.data_ptr() != host.data_ptr() and isinstance(staged, nn.Parameter)
            out = run(model, inp)
        assert_unchanged(model, before)
        with stage(model, STAGING, "none") as m:
            assert m is model and model.patchify_proj.weight is host
            out_none = run(model, inp)
        # a streamed module under sequential offload streams its own blocks: the stage leaves it alone
        with stage(model, STAGING, Offload.SEQUENTIAL, streamed=True):
            assert model.patchify_proj.weight is host
        with stage(model, STAGING, Offload.SEQUENTIAL):
            assert model.patchify_proj.weight is not host
    assert torch.equal(out, ref) and torch.equal(out_none, ref)
    assert_unchanged(model, before)


def test_on_device_keeps_shared_tensors_shared() -> None:
    lin = nn.Linear(3, 3)
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    with on_device(tied, "meta"):
        assert tied[0].weight is tied[2].weight
        assert tied[0].weight.device.type == "meta"
    assert tied[0].weight is lin.weight and lin.weight.device.type == "cpu"


def test_free_text_encoder() -> None:
    class Wrapper:
        def __init__(self) -> None:
            self.model = nn.Linear(4, 4)

    te = Wrapper()
    assert not is_freed(te)
    free_text_encoder(te)
    assert is_freed(te)
    assert all(p.device.type == "meta" for p in te.model.parameters())


def test_offload_enum() -> None:
    assert [o.value for o in Offload] == ["none", "model", "sequential"]
    assert Offload("sequential") is Offload.SEQUENTIAL
    with pytest.raises(ValueError):
        Offload("cpu")


@pytest.mark.parametrize(("offload", "tiling"), [("model", "off"), ("sequential", "off"), ("none", "on"),
                                                 ("sequential", "on")])
def test_pipeline_offload_and_tiling_match_plain_run(offload, tiling):
    """Through load_pipeline + generate (i2v, CFG+STG): same latents bit for bit, video within 1e-6."""
    import ltxcli
    from ltxcli.request import Condition

    image = torch.rand(1, 128, 192, 3, generator=torch.Generator().manual_seed(0))
    kwargs = dict(seed=5, conditions=[Condition(image, 0, 1.0)], num_frames=9)
    ref = ltxcli.load_pipeline("tiny", offload="none", vae_tiling="off").generate("a cat", **kwargs)
    pipe = ltxcli.load_pipeline("tiny", offload=offload, vae_tiling=tiling)
    res = pipe.generate("a cat", **kwargs)
    assert pipe.offload.value == offload
    assert torch.equal(res.latents, ref.latents)
    assert (res.video - ref.video).abs().max().item() <= 1e-6


def test_text_encoder_released_after_one_generation_when_asked():
    import ltxcli
    from ltxcli.offload import is_freed

    pipe = ltxcli.load_pipeline("tiny")
    ref = pipe.generate("a cat", seed=2, num_frames=9)
    pipe.free_text_encoder_after_use = True
    res = pipe.generate("a cat", seed=2, num_frames=9)
    assert torch.equal(res.latents, ref.latents)
    assert is_freed(pipe.text_encoder)
    with pytest.raises(RuntimeError, match="released"):
        pipe.generate("a cat", seed=2, num_frames=9)



NOTE = "saves no memory on the CPU (host and device memory are the same): it helps only on a GPU"


def test_offload_on_the_cpu_warns_python_callers_too() -> None:
    """load_pipeline(offload="model") on the CPU kept every weight in the same memory without a word: only `ltx
    generate` said it saves nothing. Now a Python caller gets a warning naming its argument."""
    import warnings

    import ltxcli

    with warnings.catch_warnings(), pytest.raises(UserWarning) as caught:
        warnings.simplefilter("error")  # raised where it is warned: before anything loads
        ltxcli.load_pipeline("tiny", device="cpu", offload="model")
    assert (type(caught.value).__name__, str(caught.value)) == ("OffloadIgnoredWarning", f"offload='model' {NOTE}")


def test_offload_on_the_cpu_is_said_once_by_the_cli_s_run(tmp_path) -> None:
    """The CLI's run (planning, then loading, which warns now too) still says it once, naming --offload; and
    nothing for offload none."""
    import warnings

    from ltxcli import job as job_mod

    for offload, expected in (("sequential", [f"--offload sequential {NOTE}"]), ("none", [])):
        said: list[str] = []
        settings = job_mod.JobSettings(model="tiny", output=str(tmp_path / "o.mp4"), device="cpu", offload=offload)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job = job_mod.plan_job(settings, [{"prompt": "a cat", "seed": 4}], batch=False, warn=said.append)
            job_mod.load(job, warn=said.append)
        assert [m for m in said + [str(w.message) for w in caught] if NOTE in m] == expected
