"""Multi-process generation (ltxcli.parallel) against the single-process pipeline.

Two ranks are started as subprocesses of this file (gloo on 127.0.0.1, one thread each); they run the tiny
pipeline with the transformer wrapped in CFG-parallel, sequence-parallel and auto mode, the VAE decode split
in time, and race on output claims. Four more ranks run single transformer forwards in every layout (cfg
with an idle rank, 4-way sequence, 2 x 2 hybrid) against the plain forward. Their latents are compared with a plain single-process run in this
process: the reference is the unmodified ``Pipeline`` + ``LTXVideoTransformer``, never the code under test.
Cases cover all three guidance branches with STG (each STG mode once), an image condition at frame 0
(per-token timesteps), a keyframe at a later frame (extra tokens), and token counts that the rank count does
not divide (45 tokens: the sequence path pads).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ltxcli.parallel import context, launch, orchestrate
from ltxcli.parallel import vae as parallel_vae
from ltxcli.parallel.context import DistContext
from ltxcli.parallel.orchestrate import claim_output, shard_items
from ltxcli.parallel.transformer import ParallelTransformer
from ltxcli.parallel.vae import plan_decode
from ltxcli.perf import comm

WORLD = 2
MODES = ("cfg", "sequence", "auto")
AUTO_CASES = ("t2v", "cfg_only")
REL_TOL = 1e-5
HALOS = (0, 1, 2, 3, 4)  # window halos below the receptive field: measured, not exact
DECODE_LATENT_FRAMES = 14


def _image(seed: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, h, w, 3), generator=g)


def _cases() -> dict[str, dict[str, Any]]:
    """generate() arguments per case (conditions built fresh: tensors are not shared across processes)."""
    from ltxcli.request import Condition

    return {
        # 3 branches (CFG + STG), 3x3x5 = 45 tokens: not divisible by 2
        "t2v": dict(prompt="a cat walks", height=96, width=160, num_frames=17, seed=3),
        # per-token timesteps from the frame-0 condition, attention_skip STG
        "i2v": dict(prompt="a dog runs", height=96, width=160, num_frames=17, seed=4, stg_mode="attention_skip",
                    conditions=[Condition(_image(1, 96, 160), 0, 1.0)]),
        # a keyframe at frame 16: 24 extra tokens, partial strength, whole-block STG
        "keyframe": dict(prompt="a bird flies", num_frames=17, seed=5, stg_mode="transformer_block",
                         conditions=[Condition(_image(2, 128, 192), 0, 1.0), Condition(_image(3, 128, 192), 16, 0.8)]),
        # CFG only (2 branches): "auto" picks CFG-parallel for it
        "cfg_only": dict(prompt="a red car", height=96, width=160, num_frames=9, seed=6, stg_scale=0.0),
    }


def _decode_latents() -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.randn((1, 16, DECODE_LATENT_FRAMES, 2, 2), generator=g)


def _noise_vae() -> torch.nn.Module:
    """A tiny 0.9.1-family VAE: timestep-conditioned decoder with spatial noise injection."""
    from ltxcli.models.configs import VAEConfig, official_vae_config
    from ltxcli.models.vae import CausalVideoVAE

    cfg = official_vae_config("0.9.1")
    for _, params in cfg["decoder_blocks"]:
        if "num_layers" in params:
            params["num_layers"] = 1
    cfg.update(latent_channels=16, encoder_base_channels=8, decoder_base_channels=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        vae = CausalVideoVAE(VAEConfig.from_official(cfg))
        with torch.no_grad():
            for name, p in vae.named_parameters():
                if "per_channel_scale" in name or "scale_shift_table" in name:
                    p.normal_(0, 0.1)
    return vae.eval().requires_grad_(False)


def _decode_noise_vae(vae: torch.nn.Module, latents: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(21)
    if ctx is None:
        return vae.decode(latents, timestep=0.05, generator=gen)
    return parallel_vae.parallel_decode(vae, latents, timestep=0.05, generator=gen, ctx=ctx)


# --- worker (runs as `python tests/test_distributed.py RANK WORLD PORT OUT_DIR`) ------------------------------


def _worker(rank: int, world: int, port: int, out_dir: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(1000 + rank)  # different global RNG per rank: nothing may depend on it
    from ltxcli.tiny import build_pipeline

    ctx = context.init(rank, world, init_method=f"tcp://127.0.0.1:{port}", backend="gloo", timeout_s=120)
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    plain_transformer, plain_vae = pipe.transformer, pipe.vae
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for mode in MODES:
            wrapped = ParallelTransformer(plain_transformer, ctx, mode)
            pipe.transformer = wrapped
            pipe.vae = parallel_vae.ParallelVAE(plain_vae, ctx)
            for case, kwargs in _cases().items():
                if mode == "auto" and case not in AUTO_CASES:
                    continue
                res = pipe.generate(**kwargs)
                results[f"{mode}/{case}"] = {"latents": res.latents, "video": res.video}
                results[f"{mode}/{case}/layout"] = wrapped.layout_for(3 if kwargs.get("stg_scale", 1.0) else 2)
            results[f"{mode}/comm_bytes"] = wrapped.comm_bytes
            wrapped.unwrap()
        pipe.transformer, pipe.vae = plain_transformer, plain_vae

        lat = _decode_latents()
        for halo in (None, parallel_vae.receptive_halo(plain_vae), *HALOS):
            out = parallel_vae.parallel_decode(plain_vae, lat, timestep=0.05, ctx=ctx, halo=halo, dst=0)
            results[f"decode/{halo}"] = out
        noise_vae = _noise_vae()
        results["decode_noise"] = _decode_noise_vae(noise_vae, lat[:, :, :7], ctx)
        noise_vae.decoder.causal = True
        results["decode_causal"] = _decode_noise_vae(noise_vae, lat[:, :, :7], ctx)
    results["seconds"] = time.perf_counter() - t0

    # claim race: both ranks go for the same 40 outputs at once
    claims = []
    for i in range(40):
        ctx.barrier()
        claims.append(claim_output(out_dir / f"item{i}.mp4"))
    results["claims"] = claims
    results["stats"] = orchestrate.rank_stats(ctx, {"total_s": results["seconds"]}, transformer=None)
    torch.save(results, out_dir / f"rank{rank}.pt")
    ctx.barrier()
    ctx.destroy()


def _hybrid_worker(rank: int, world: int, port: int, out_dir: Path) -> None:
    """4 ranks, one transformer forward per mode against the plain forward (4 heads: every layout is valid)."""
    import dataclasses

    from ltxcli.models.rope import latent_coords, pixel_coords
    from ltxcli.models.transformer import LTXVideoTransformer
    from ltxcli.tiny import TINY_TRANSFORMER

    torch.set_num_threads(1)
    ctx = context.init(rank, world, init_method=f"tcp://127.0.0.1:{port}", backend="gloo", timeout_s=120)
    cfg = dataclasses.replace(TINY_TRANSFORMER, num_attention_heads=4, attention_head_dim=8)
    g = torch.Generator().manual_seed(5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        model = LTXVideoTransformer(cfg).eval().requires_grad_(False)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "scale_shift_table" in name:
                    p.normal_(0, 0.1)
    n = 45  # 3 x 3 x 5 latents: padded to 46 (2 shards) or 48 (4 shards)
    coords = pixel_coords(latent_coords(3, 3, 5), causal_fix=True)[None]
    coords[:, 0] /= 24.0
    rope = model.rope_tables(coords)
    errors: dict[str, float] = {}
    with torch.inference_mode():
        for branches in (3, 2):
            x = torch.randn((branches, n, 16), generator=g)
            text = torch.randn((branches, 6, 32), generator=g)
            text_mask = torch.ones((branches, 6))
            text_mask[0, 4:] = 0
            tau = torch.rand((branches, n), generator=g)  # per-token timesteps
            skip = torch.ones((cfg.num_layers, branches))
            skip[1, -1] = 0  # perturb the last branch in block 1
            kwargs = dict(rope=rope, encoder_attention_mask=text_mask, skip_layer_mask=skip,
                          skip_layer_strategy="attention_values")
            ref = model(x, text, tau, **kwargs)
            for mode in ("cfg", "sequence", "cfg+sequence", "auto"):
                wrapped = ParallelTransformer(model, ctx, mode)
                got = wrapped(x, text, tau, **kwargs)
                errors[f"{mode}/{branches}"] = float((got - ref).abs().max() / ref.abs().max())
                errors[f"{mode}/{branches}/layout"] = wrapped.layout_for(branches)
                wrapped.unwrap()
    torch.save(errors, out_dir / f"hybrid{rank}.pt")
    ctx.barrier()
    ctx.destroy()


# --- fixtures ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference() -> dict[str, Any]:
    """Single-process results of the plain pipeline."""
    from ltxcli.tiny import build_pipeline

    torch.manual_seed(0)
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for case, kwargs in _cases().items():
            res = pipe.generate(**kwargs)
            out[case] = {"latents": res.latents, "video": res.video}
        out["decode"] = pipe.vae.decode(_decode_latents(), timestep=0.05)
        noise_vae = _noise_vae()
        out["decode_noise"] = _decode_noise_vae(noise_vae, _decode_latents()[:, :, :7], None)
        noise_vae.decoder.causal = True
        out["decode_causal"] = _decode_noise_vae(noise_vae, _decode_latents()[:, :, :7], None)
    return out


@pytest.fixture(scope="module")
def runs() -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Start the ranks, build the single-process reference while they run, then collect their results."""
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        port = _free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(var, None)
        hybrid_port = _free_port()

        def start(kind: str, rank: int, world: int, port: int) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, __file__, kind, str(rank), str(world), str(port), tmp], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )

        procs = [start("pipeline", r, WORLD, port) for r in range(WORLD)]
        procs += [start("hybrid", r, 4, hybrid_port) for r in range(4)]
        try:
            reference = _reference()
            logs = [p.communicate(timeout=240)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, log in zip(procs, logs, strict=True):
            assert p.returncode == 0, f"{p.args[2:4]} failed:\n{log[-4000:]}"
        ranks = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
        hybrid = [torch.load(out_dir / f"hybrid{r}.pt", weights_only=False) for r in range(4)]
    return ranks, reference, hybrid


@pytest.fixture(scope="module")
def ranks(runs) -> list[dict[str, Any]]:
    return runs[0]


@pytest.fixture(scope="module")
def reference(runs) -> dict[str, Any]:
    return runs[1]


@pytest.fixture(scope="module")
def hybrid(runs) -> list[dict[str, Any]]:
    return runs[2]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# --- tests -------------------------------------------------------------------------------------------------


RUNS = [(m, c) for m in MODES for c in ("t2v", "i2v", "keyframe", "cfg_only") if m != "auto" or c in AUTO_CASES]


@pytest.mark.parametrize(("mode", "case"), RUNS)
def test_latents_match_single_process(ranks, reference, mode, case):
    ref = reference[case]["latents"]
    for r, res in enumerate(ranks):
        got = res[f"{mode}/{case}"]["latents"]
        assert got.shape == ref.shape
        err = _rel(got, ref)
        print(f"{mode:8s} {case:9s} rank {r}: max rel err {err:.2e}")
        assert err <= REL_TOL, f"{mode}/{case} rank {r}: relative error {err:.3g}"
    # every rank holds the same latents (the sampler runs replicated on gathered velocities)
    assert torch.equal(ranks[0][f"{mode}/{case}"]["latents"], ranks[1][f"{mode}/{case}"]["latents"])


def test_auto_layout(ranks):
    assert ranks[0]["auto/t2v/layout"] == (1, 2)  # 3 branches on 2 ranks: sequence
    assert ranks[0]["auto/cfg_only/layout"] == (2, 1)  # 2 branches on 2 ranks: one each


@pytest.mark.parametrize("branches", [3, 2])
@pytest.mark.parametrize("mode", ["cfg", "sequence", "cfg+sequence", "auto"])
def test_four_ranks_every_layout(hybrid, mode, branches):
    """4 ranks: cfg with an idle rank (3 branches), 4-way sequence (45 tokens padded to 48), 2 x 2 hybrid."""
    expected = {"cfg": (4, 1), "sequence": (1, 4), "cfg+sequence": (2, 2), "auto": (1, 4) if branches == 3 else (2, 2)}
    for r, res in enumerate(hybrid):
        assert res[f"{mode}/{branches}/layout"] == expected[mode]
        err = res[f"{mode}/{branches}"]
        print(f"4 ranks {mode:12s} {branches} branches rank {r}: max rel err {err:.2e}")
        assert err <= REL_TOL


def test_video_matches_single_process(ranks, reference):
    """The whole generate() with the time-split decode at the default (exact) halo."""
    for mode in ("cfg", "sequence"):
        for case in ("t2v", "keyframe"):
            got, ref = ranks[0][f"{mode}/{case}"]["video"], reference[case]["video"]
            assert got.shape == ref.shape
            assert _rel(got, ref) <= 1e-5


def test_communication_counted(ranks):
    """The bytes the wrapper counts are the hand-derived figures of the communication model (float32, 4 steps,
    2 layers, inner dim 32, 16 output channels, 2 ranks)."""
    steps, layers, dim, out_ch, b = 4, 2, 32, 16, 4
    # (branches, tokens) per case: 96x160x17 -> 3x3x5 = 45 (padded to 46); 128x192x17 + a 4x6 keyframe -> 96;
    # 96x160x9 -> 2x3x5 = 30 with CFG only
    cases = [(3, 46), (3, 46), (3, 96), (2, 30)]
    # sequence: per layer q, k, v and out all-to-alls, each sending half of [branches, tokens/2, dim];
    # then the output all-gather receives the other rank's [branches, tokens/2, out_ch]
    seq = sum(steps * (layers * 4 * br * (n // 2) * dim * b // 2 + br * (n // 2) * out_ch * b) for br, n in cases)
    assert ranks[0]["sequence/comm_bytes"] == seq
    # cfg: one all-gather per step of the other rank's padded chunk of ceil(branches / 2) branches
    tokens = [45, 45, 96, 30]
    cfg = sum(steps * -(-br // 2) * n * out_ch * b for (br, _), n in zip(cases, tokens, strict=True))
    assert ranks[0]["cfg/comm_bytes"] == cfg


def test_parallel_decode_exchange_is_exact(ranks, reference):
    """Default: each rank decodes only its latents, convolutions take their padding frames from neighbours."""
    ref = reference["decode"]
    got = ranks[0]["decode/None"]
    assert got.shape == ref.shape == (1, 3, 8 * (DECODE_LATENT_FRAMES - 1) + 1, 64, 64)
    err = _rel(got, ref)
    print(f"decode, halo exchange: max rel err {err:.2e}")
    assert err <= 1e-5
    assert ranks[1]["decode/None"] is None  # dst=0 only


def test_parallel_decode_halo_windows(ranks, reference):
    """Overlapping windows: exact at the receptive field (9 latents here), approximate below it."""
    ref = reference["decode"]
    receptive = next(k for k in ranks[0] if k.startswith("decode/") and k not in
                     {"decode/None", *(f"decode/{h}" for h in HALOS)})
    assert _rel(ranks[0][receptive], ref) <= 1e-5
    errs = {h: _rel(ranks[0][f"decode/{h}"], ref) for h in HALOS}
    print("decode max rel err by window halo (latent frames):", {h: f"{e:.2e}" for h, e in errs.items()})
    # the error decays with the halo (measured on this random-weight decoder)
    assert errs[4] < errs[1] < errs[0]


def test_parallel_decode_noise_injection_and_causal(ranks, reference):
    """0.9.1 decoders inject per-(H, W) noise maps: the same generator on every rank reproduces them; a causal
    decoder takes two frames from the previous rank and none from the next."""
    for key in ("decode_noise", "decode_causal"):
        ref = reference[key]
        for res in ranks:
            err = _rel(res[key], ref)
            print(f"{key}: max rel err {err:.2e}")
            assert err <= 1e-5
    assert _rel(reference["decode_noise"], reference["decode_causal"]) > 1e-2  # the causal flag matters


def test_claim_race_two_processes(ranks):
    a, b = ranks[0]["claims"], ranks[1]["claims"]
    assert all(x != y for x, y in zip(a, b, strict=True)), "each output is claimed by exactly one rank"


def test_rank_stats(ranks):
    stats = ranks[0]["stats"]
    assert [s["rank"] for s in stats] == [0, 1]
    assert all(s["peak_memory_bytes"] > 0 and s["timings"]["total_s"] > 0 for s in stats)
    assert stats == ranks[1]["stats"]


# --- in-process ---------------------------------------------------------------------------------------------


def _ctx(world: int) -> DistContext:
    return DistContext(0, world, 0, torch.device("cpu"), None)


def test_heads_must_divide_sequence_degree():
    from ltxcli.models.transformer import LTXVideoTransformer
    from ltxcli.tiny import TINY_TRANSFORMER

    model = LTXVideoTransformer(TINY_TRANSFORMER)  # 2 heads
    with pytest.raises(ValueError, match=r"head count \(2\) to be divisible by 3"):
        ParallelTransformer(model, _ctx(3), "sequence")
    with pytest.raises(ValueError, match="cfg_degree=4 must divide"):
        ParallelTransformer(model, _ctx(6), "cfg+sequence", cfg_degree=4)
    with pytest.raises(ValueError, match="unknown parallel mode"):
        ParallelTransformer(model, _ctx(2), "tensor")
    # cfg needs no head split, and auto falls back to it
    assert ParallelTransformer(model, _ctx(3), "auto").layout_for(3) == (3, 1)


def test_shard_items_round_robin():
    items = list(range(11))
    shards = [shard_items(items, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    with pytest.raises(ValueError):
        shard_items(items, 3, 3)


def test_plan_decode_covers_every_frame_once():
    for f in (1, 2, 5, 16, 17):
        for world in (2, 3, 4):
            plan = plan_decode(f, world, 2)
            frames = [t for s in plan for t in range(*s.keep)]
            assert frames == list(range(8 * (f - 1) + 1))
            for s in plan:
                if s.core[1] > s.core[0]:
                    a, b = s.window
                    assert a <= s.core[0] - (s.core[0] > 0) and b >= s.core[1]
                    # the window's output (global frames 8a .. 8(b-1)) contains what it keeps
                    assert 8 * a <= s.keep[0] and s.keep[1] <= 8 * (b - 1) + 1


def test_a_claim_held_at_exit_is_released(tmp_path):
    """Ctrl-C after a claim and before its release (the window the batch runner cannot close with ``try``): the
    process exits through the interrupt and leaves no claim; a claim file another process rewrote is kept."""
    code = ("import json, os, sys; from ltxcli.parallel.orchestrate import claim_output; "
            "assert claim_output(sys.argv[1]) and claim_output(sys.argv[2]); "
            "open(sys.argv[2] + '.claim', 'w').write(json.dumps({'pid': 1, 'host': 'elsewhere', 'time': 0})); "
            "raise KeyboardInterrupt")
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    proc = subprocess.run([sys.executable, "-c", code, str(a), str(b)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert "KeyboardInterrupt" in proc.stderr and proc.returncode != 0
    assert not (tmp_path / "a.mp4.claim").exists()
    assert json.loads((tmp_path / "b.mp4.claim").read_text())["host"] == "elsewhere"


def test_claim_output_exists_and_stale(tmp_path):
    out = tmp_path / "a.mp4"
    assert claim_output(out)
    assert not claim_output(out)  # held by a live process (this one)
    orchestrate.release_claim(out)
    out.write_bytes(b"x")
    assert not claim_output(out)  # finished
    assert not (tmp_path / "a.mp4.claim").exists()

    # a claim left by a process that died on this host is broken
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "b.mp4"
    (tmp_path / "b.mp4.claim").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": 0}))
    assert claim_output(stale)
    assert json.loads((tmp_path / "b.mp4.claim").read_text())["pid"] == os.getpid()
    # a claim from another host is kept unless older than stale_after_s
    other = tmp_path / "c.mp4"
    (tmp_path / "c.mp4.claim").write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": 0}))
    assert not claim_output(other)
    old = time.time() - 3600
    os.utime(tmp_path / "c.mp4.claim", (old, old))
    assert claim_output(other, stale_after_s=600)


def test_torchrun_command():
    cmd = launch.torchrun_command(["generate", "a cat"], 4)
    assert cmd[1:] == ["-m", "ltxcli.parallel.torchrun", "--nproc-per-node=4", "--standalone", "-m", "ltxcli",
                       "generate", "a cat"]
    multi = launch.torchrun_command(["generate", "x"], 8, nnodes=2, rdzv_endpoint="node1:29500")
    assert "--nnodes=2" in multi and "--rdzv-endpoint=node1:29500" in multi and "--standalone" not in multi


def test_a_rank_stopped_by_another_ones_failure_leaves_the_job_code_to_it(tmp_path, monkeypatch, capsys) -> None:
    """A rank whose collective broke because its peer failed (gloo: "Connection closed by peer ... GLHF!") said
    "internal error" and recorded exit 1; when it recorded before the rank that ran out of memory (the order
    of two processes racing to their last line), `--gpus` exited 1, not 5. Here it records first."""
    import typer

    from ltxcli.cli.common import guarded

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(launch.RANK_STATUS_ENV, str(tmp_path))

    @guarded
    def rank_fails(rank: str, exc: BaseException) -> None:
        monkeypatch.setenv("RANK", rank)
        raise exc

    gloo = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
            "[127.0.0.1]:16782. This is typically caused by a remote worker crashing. Check the logs of the remote "
            "worker before reporting an error. GLHF! \U0001f3d6\ufe0f")
    for rank, exc, code in (("0", RuntimeError(gloo), 1), ("1", torch.OutOfMemoryError("CUDA out of memory"), 5)):
        with pytest.raises(typer.Exit) as stopped:
            rank_fails(rank, exc)
        assert stopped.value.exit_code == code
    said = capsys.readouterr().err.splitlines()[0]
    assert "another process" in said and "internal error" not in said and "GLHF" not in said, said
    assert launch.job_exit_code(1, launch._recorded_codes(tmp_path)) == 5


def test_a_rank_whose_stdout_closed_leaves_141_to_the_launcher(tmp_path, monkeypatch) -> None:
    """`ltx generate --batch ... --gpus 2 | head -1`: the rank whose next line found the pipe closed stopped with
    141 (as one process does) but recorded nothing, so the job exited with torchrun's 1."""
    import io

    from ltxcli.cli.common import guarded

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(launch.RANK_STATUS_ENV, str(tmp_path))
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # (not this process's descriptor 1, pointed at /dev/null)

    @guarded
    def writes_a_line() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(SystemExit) as stopped:
        writes_a_line()
    assert stopped.value.code == 141
    assert launch.job_exit_code(1, launch._recorded_codes(tmp_path)) == 141


def test_init_from_env_outside_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert context.init_from_env() is None
    assert context.is_main()


def test_comm_model_matches_hand_figures():
    rows = {(r.model, r.width, r.gpus, r.mode): r for r in comm.comm_model()}
    # 2B, 768x512x121 = 16 x 16 x 24 = 6144 tokens, P = 8: each all-to-all sends 6144/8 x 2048 x 2 B x 7/8
    # = 2.75 MB per branch; 4 per layer, 28 layers, 3 branches; plus 7/8 of the 6144 x 128 x 2 B output x 3
    seq = rows[("2b", 768, 8, "sequence")]
    assert seq.tokens == 6144
    expected = 4 * 28 * 3 * 768 * 2048 * 2 * 7 / 8 + 3 * 6144 * 128 * 2 * 7 / 8
    assert seq.comm_mb * 1e6 == pytest.approx(expected)
    # cfg at 2 GPUs: rank 0 runs 2 of the 3 branches, receives rank 1's padded 2-branch chunk
    cfg = rows[("2b", 768, 2, "cfg")]
    assert cfg.comm_mb * 1e6 == pytest.approx(2 * 6144 * 128 * 2)
    assert cfg.speedup == pytest.approx(1.5, rel=1e-3)


if __name__ == "__main__":
    worker = {"pipeline": _worker, "hybrid": _hybrid_worker}[sys.argv[1]]
    worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_to_the_launcher_reaches_torchrun_as_sigint_then_the_launcher(tmp_path, monkeypatch, name) -> None:
    """SIGTERM, SIGHUP or Ctrl-C to ``ltx --gpus N`` (the launcher's pid alone: kill, a supervisor, a closed
    terminal) reaches torchrun as SIGINT, which its workers turn into a clean exit; a SIGTERM or SIGHUP is then
    delivered to the launcher under its own handler (SIGHUP used to kill the launcher and leave torchrun running). SIGTERM used to kill torchrun (its workers kept running), then reach them as SIGTERM (no cleanup);
    SIGINT was ignored (the job ran on); and torchrun shares no process group with the launcher now, so a
    terminal's Ctrl-C reaches it once, from the launcher."""
    import signal
    import threading
    import time

    ready, got = tmp_path / "ready", tmp_path / "got"
    stand_in = (f"import os, pathlib, signal, sys, time\n"
                f"signal.signal(signal.SIGINT, lambda s, f: (pathlib.Path({str(got)!r}).write_text("
                f"f'{{s}} {{os.getsid(0) == os.getpid()}}'), sys.exit(7)))\n"
                f"pathlib.Path({str(ready)!r}).touch()\n"
                "time.sleep(60)\n")
    monkeypatch.setattr(launch, "torchrun_command", lambda *a, **k: [sys.executable, "-c", stand_in])
    seen: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        def send() -> None:
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), getattr(signal, name))

        threading.Thread(target=send, daemon=True).start()
        code = launch.launch(["generate", "x"], 2, device="cpu")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert got.read_text() == f"{int(signal.SIGINT)} True"  # torchrun got SIGINT, in a session of its own
    assert code == 7 and seen == ([] if name == "SIGINT" else [getattr(signal, name)])


@pytest.mark.parametrize(("name", "code", "said"), [
    ("SIGKILL", 5, "out of memory (rank 0 was killed by SIGKILL, most likely by the system's out-of-memory killer"),
    ("SIGSEGV", 1, "internal error: WorkerDiedError: rank 0 died from SIGSEGV (a crash in native code"),
])
def test_a_worker_a_signal_ended_is_named_with_the_likely_cause(tmp_path, monkeypatch, name, code, said) -> None:
    """A worker ended by a signal cannot record its exit code or say what happened: torchrun (ltxcli.parallel.torchrun)
    records it for `ltx --gpus`, whose one line names the rank and the likely cause. SIGKILL (most likely the
    out-of-memory killer) is an out-of-memory failure, exit 5, where the job used to exit 1 without a word."""
    from ltxcli.cli.common import classify

    script = tmp_path / "die.py"
    script.write_text(f"import os, signal\nos.kill(os.getpid(), signal.{name})\n")
    monkeypatch.setattr(launch, "torchrun_command", lambda args, nproc, **kwargs: [
        sys.executable, "-m", "ltxcli.parallel.torchrun", "--nproc-per-node=1", "--standalone", str(script)])
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LOGLEVEL", "CRITICAL")
    try:
        got, line = launch.launch(["generate", "x"], 1, device="cpu"), ""  # (used to: torchrun's 1, no word)
    except Exception as e:  # what `ltx --gpus` then prints, with its code
        got, line = classify(e)
    assert got == code and line.startswith(said), line


def test_torchrun_ends_without_its_traceback_when_a_worker_fails(tmp_path) -> None:
    """``ltx --gpus`` runs torchrun through ltxcli.parallel.torchrun: a failed worker (which said what failed in one
    line) ends the launcher with exit 1 and no 35-line Python traceback on the user's terminal."""
    import subprocess

    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('error: worker failed', file=sys.stderr)\nsys.exit(6)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ltxcli.parallel.torchrun", "--nproc-per-node=1", "--standalone",
                           str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "error: worker failed" in proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
