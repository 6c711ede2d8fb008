"""Registry, downloads and verification against a fake Hub on 127.0.0.1 (no other network is reachable)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest

from ltxcli import weights as W
from ltxcli.cli.common import Output
from ltxcli.cli.progress import WeightsProgress
from ltxcli.weights.registry import safe_join

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from fake_hub import FakeHub, git_blob_id

REPO_ROOT = Path(__file__).resolve().parents[1]
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to resolve or connect to anything but loopback."""
    real_connect, real_gai = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:  # type: ignore[index]
            raise AssertionError(f"test tried to connect to {address}")
        return real_connect(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host is not None and host not in _LOOPBACK and host != b"127.0.0.1":
            raise AssertionError(f"test tried to resolve {host!r}")
        return real_gai(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated HF cache, ltxcli state and token; online; no proxy."""
    import huggingface_hub.constants as hfc

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LTX_WEIGHTS_DIR", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_DISABLE_PROGRESS_BARS",
                "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hfc, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hfc, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(hfc, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    return tmp_path


def _bytes(n: int, seed: int) -> bytes:
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


MODEL = _bytes(300_001, 1)
UPSCALER = _bytes(70_003, 2)
TE_WEIGHTS = _bytes(50_000, 3)
TE_CONFIG = b'{"d_model": 8}\n'
SPIECE = _bytes(1_000, 4)
BIN = _bytes(2_000, 5)


@pytest.fixture
def hub(env: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    h = FakeHub()
    h.add("acme/video", "model.safetensors", MODEL)
    h.add("acme/video", "upscaler.safetensors", UPSCALER)
    h.add("acme/video", "README.md", b"# readme\n")
    h.add("acme/textenc", "te/config.json", TE_CONFIG)
    h.add("acme/textenc", "te/model.safetensors", TE_WEIGHTS)
    h.add("acme/textenc", "te/pytorch_model.bin", BIN)
    h.add("acme/textenc", "tok/spiece.model", SPIECE)
    h.add("acme/textenc", "unet/model.safetensors", _bytes(100, 6))
    with h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


def _registry(**extra: dict) -> W.Registry:
    weights = {
        "m": {"kind": "model", "description": "test model", "repo": "acme/video", "files": ["model.safetensors"],
              "preset": "m", "text_encoder": "te", "upsampler": "up", "default": True},
        "up": {"kind": "upsampler", "description": "test upsampler", "repo": "acme/video",
               "files": ["upscaler.safetensors"]},
        "te": {"kind": "text_encoder", "description": "test text encoder", "repo": "acme/textenc",
               "allow": ["te/*", "tok/*"], "ignore": ["*.bin"]},
        "tiny": {"kind": "builtin", "description": "noise", "preset": "tiny"},
    }
    weights.update(extra)
    return W.parse_registry({"schema": 1, "weights": weights})


REG = _registry()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg
    return msg


def _records(path: Path) -> dict:
    return json.loads(path.read_text())["files"] if path.exists() else {}


# ----------------------------------------------------------------------------------- packaged toml

# Hand-copied from the official configs/*.yaml of Lightricks/LTX-Video (checkpoint_path, spatial_upscaler_model_path,
# precision); 0.9.7 yamls from the repo history (commit 98a0ce6).
OFFICIAL = {
    "ltxv-2b-0.9": ("ltx-video-2b-v0.9.safetensors", None, None),
    "ltxv-2b-0.9.1": ("ltx-video-2b-v0.9.1.safetensors", None, None),
    "ltxv-2b-0.9.5": ("ltx-video-2b-v0.9.5.safetensors", None, None),
    "ltxv-2b-0.9.6-dev": ("ltxv-2b-0.9.6-dev-04-25.safetensors", None, None),
    "ltxv-2b-0.9.6-distilled": ("ltxv-2b-0.9.6-distilled-04-25.safetensors", None, None),
    "ltxv-2b-0.9.8-distilled": ("ltxv-2b-0.9.8-distilled.safetensors", "ltxv-spatial-upscaler-0.9.8", None),
    "ltxv-2b-0.9.8-distilled-fp8": ("ltxv-2b-0.9.8-distilled-fp8.safetensors", "ltxv-spatial-upscaler-0.9.8",
                                    "float8_e4m3fn"),
    "ltxv-13b-0.9.7-dev": ("ltxv-13b-0.9.7-dev.safetensors", "ltxv-spatial-upscaler-0.9.7", None),
    "ltxv-13b-0.9.7-dev-fp8": ("ltxv-13b-0.9.7-dev-fp8.safetensors", "ltxv-spatial-upscaler-0.9.7", "float8_e4m3fn"),
    "ltxv-13b-0.9.7-distilled": ("ltxv-13b-0.9.7-distilled.safetensors", "ltxv-spatial-upscaler-0.9.7", None),
    "ltxv-13b-0.9.7-distilled-fp8": ("ltxv-13b-0.9.7-distilled-fp8.safetensors", "ltxv-spatial-upscaler-0.9.7",
                                     "float8_e4m3fn"),
    "ltxv-13b-0.9.8-dev": ("ltxv-13b-0.9.8-dev.safetensors", "ltxv-spatial-upscaler-0.9.8", None),
    "ltxv-13b-0.9.8-dev-fp8": ("ltxv-13b-0.9.8-dev-fp8.safetensors", "ltxv-spatial-upscaler-0.9.8", "float8_e4m3fn"),
    "ltxv-13b-0.9.8-distilled": ("ltxv-13b-0.9.8-distilled.safetensors", "ltxv-spatial-upscaler-0.9.8", None),
    "ltxv-13b-0.9.8-distilled-fp8": ("ltxv-13b-0.9.8-distilled-fp8.safetensors", "ltxv-spatial-upscaler-0.9.8",
                                     "float8_e4m3fn"),
}


def test_packaged_registry_matches_official_configs() -> None:
    reg = W.load_registry()
    models = {e.name: e for e in reg.of_kind("model")}
    assert set(models) == set(OFFICIAL)
    for name, (file, upsampler, precision) in OFFICIAL.items():
        e = models[name]
        assert e.repo == "Lightricks/LTX-Video"
        assert [f.path for f in e.files] == [file]
        assert (e.upsampler, e.precision, e.text_encoder) == (upsampler, precision, "t5-xxl")
        assert e.preset == name.removesuffix("-fp8")
    ups = {e.name: e for e in reg.of_kind("upsampler")}
    assert {n: [f.path for f in e.files] for n, e in ups.items()} == {
        "ltxv-spatial-upscaler-0.9.7": ["ltxv-spatial-upscaler-0.9.7.safetensors"],
        "ltxv-spatial-upscaler-0.9.8": ["ltxv-spatial-upscaler-0.9.8.safetensors"],
        # ComfyUI-LTXVideo's README links huggingface.co/Lightricks/LTX-Video/blob/main/<this file>
        "ltxv-temporal-upscaler-0.9.7": ["ltxv-temporal-upscaler-0.9.7.safetensors"],
    }
    assert reg.default.name == "ltxv-2b-0.9.8-distilled"
    assert [e.name for e in reg.closure(reg.default.name)] == [
        "ltxv-2b-0.9.8-distilled", "ltxv-spatial-upscaler-0.9.8", "t5-xxl"]
    te = reg["t5-xxl"]
    assert (te.kind, te.repo) == ("text_encoder", "PixArt-alpha/PixArt-XL-2-1024-MS")
    for rel, wanted in [("text_encoder/config.json", True), ("text_encoder/model-00001-of-00002.safetensors", True),
                        ("text_encoder/model.safetensors.index.json", True), ("tokenizer/spiece.model", True),
                        ("text_encoder/pytorch_model-00001-of-00002.bin", False),
                        ("transformer/diffusion_pytorch_model.safetensors", False), ("vae/config.json", False)]:
        assert te.selects(rel) is wanted, rel
    tiny = reg["tiny"]
    assert (tiny.kind, tiny.repo, tiny.files, tiny.preset) == ("builtin", None, (), "tiny")
    assert "noise" in tiny.description
    depth = reg["depth-anything-v2-small"]
    assert (depth.kind, depth.repo) == ("depth", "depth-anything/Depth-Anything-V2-Small-hf")
    for rel, wanted in [("model.safetensors", True), ("config.json", True), ("preprocessor_config.json", True),
                        ("pytorch_model.bin", False), ("README.md", False)]:
        assert depth.selects(rel) is wanted, rel
    # the prompt enhancer models every official config names (ltxcli.enhance): configs, tokenizers, safetensors only
    llm, cap = reg["llama-3.2-3b-instruct"], reg["florence-2-large-promptgen-v2.0"]
    assert (llm.kind, llm.repo, cap.kind, cap.repo) == (
        "enhancer", "unsloth/Llama-3.2-3B-Instruct", "captioner", "MiaoshouAI/Florence-2-large-PromptGen-v2.0")
    for e, rel, wanted in [(llm, "model-00001-of-00002.safetensors", True), (llm, "tokenizer_config.json", True),
                           (llm, "original/consolidated.00.pth", False), (cap, "model.safetensors", True),
                           (cap, "merges.txt", True), (cap, "modeling_florence2.py", False),
                           (cap, "pytorch_model.bin", False)]:
        assert e.selects(rel) is wanted, rel
    # upsamplers (2 spatial, 1 temporal), t5-xxl, tiny, the depth model, the two enhancer models; LoRAs: tests/test_lora.py
    assert len([e for e in reg if e.kind != "lora"]) == len(OFFICIAL) + 3 + 1 + 1 + 1 + 2


def test_packaged_registry_entries_are_well_formed() -> None:
    reg = W.load_registry()
    assert sum(e.default for e in reg) == 1
    for e in reg:
        assert e.description and "\n" not in e.description
        if e.kind == "builtin":
            continue
        owner, name = e.repo.split("/")
        assert owner and name
        for f in e.files:
            assert W.safe_relpath(f.path) == f.path and f.path.endswith(".safetensors")
        for ref, kind in ((e.upsampler, "upsampler"), (e.text_encoder, "text_encoder")):
            assert ref is None or reg[ref].kind == kind
        if e.kind == "model":
            assert e.preset
    # The top-level weights.toml is a link to the packaged file, and pyproject ships it in the wheel.
    assert (REPO_ROOT / "weights.toml").is_symlink()
    assert (REPO_ROOT / "weights.toml").resolve() == (REPO_ROOT / "ltxcli" / "weights.toml").resolve()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "weights.toml" in pyproject["tool"]["setuptools"]["package-data"]["ltxcli"]


@pytest.mark.parametrize("change, error", [
    ({"m": {"bogus": 1}}, "unknown key"),
    ({"m": {"default": False}}, "exactly one entry"),
    ({"up": {"default": True}}, "only a model"),
    ({"m": {"upsampler": "nope"}}, "is not a upsampler entry"),
    ({"m": {"upsampler": "te"}}, "is not a upsampler entry"),
    ({"m": {"text_encoder": "up"}}, "is not a text_encoder entry"),
    ({"m": {"files": ["../model.safetensors"]}}, "unsafe file name"),
    ({"m": {"files": ["/abs.safetensors"]}}, "unsafe file name"),
    ({"m": {"files": ["a\\b.safetensors"]}}, "unsafe file name"),
    ({"m": {"files": "model.safetensors"}}, "files must be a list"),
    ({"m": {"files": [{"path": "x", "sha256": "ABC"}]}}, "sha256 must be"),
    ({"m": {"files": [{"path": "x", "size": 0}]}}, "size must be"),
    ({"m": {"repo": "a/b/c"}}, "invalid repo id"),
    ({"m": {"repo": "../b"}}, "invalid repo id"),
    ({"m": {"preset": None}}, "need a preset"),
    ({"m": {"precision": "int4"}}, "precision must be"),
    ({"m": {"allow": ["*"]}}, "exactly one of files or allow"),
    ({"m": {"revision": "../main"}}, "invalid revision"),
    ({"tiny": {"repo": "acme/video"}}, "builtin entries"),
    ({"up": {"preset": "m"}}, "only models"),
    ({"m": {"kind": "checkpoint"}}, "kind must be"),
])
def test_registry_rejects_malformed_entries(change: dict, error: str) -> None:
    base = {
        "m": {"kind": "model", "description": "d", "repo": "acme/video", "files": ["model.safetensors"],
              "preset": "m", "text_encoder": "te", "upsampler": "up", "default": True},
        "up": {"kind": "upsampler", "description": "d", "repo": "acme/video", "files": ["u.safetensors"]},
        "te": {"kind": "text_encoder", "description": "d", "repo": "acme/te", "allow": ["*"]},
        "tiny": {"kind": "builtin", "description": "d", "preset": "tiny"},
    }
    for name, fields in change.items():
        for k, v in fields.items():
            if v is None:
                base[name].pop(k)
            else:
                base[name][k] = v
    with pytest.raises((W.RegistryError, W.UnsafePathError), match=error):
        W.parse_registry({"schema": 1, "weights": base})


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "a\\b", "..\\x", "C:/x", "c:x",
                                  "a//b", "./a", "a/./b", "a/", "x\x00y", "a\nb", "file.txt:stream"])
def test_unsafe_names_rejected(name: str) -> None:
    with pytest.raises(W.UnsafePathError):
        W.safe_relpath(name)
    with pytest.raises(W.UnsafePathError):
        safe_join(Path("/weights"), name)


@pytest.mark.parametrize("name", ["a.safetensors", "text_encoder/model-00001-of-00002.safetensors", "a..b", ".gitattributes"])
def test_safe_names_accepted(name: str) -> None:
    assert W.safe_relpath(name) == name
    assert safe_join(Path("/weights"), name) == Path("/weights", *name.split("/"))


# ------------------------------------------------------------------------------------------ downloads


def test_pull_downloads_and_verifies_into_hub_cache(hub: FakeHub, env: Path) -> None:
    events: list[W.Event] = []
    paths = W.pull("m", on_event=events.append, registry=REG)
    commit = hub.commits["acme/video"]
    storage = env / "hf" / "hub" / "models--acme--video"
    assert paths == [storage / "snapshots" / commit / "model.safetensors"]
    assert paths[0].read_bytes() == MODEL
    assert os.path.realpath(paths[0]) == str(storage / "blobs" / _sha256(MODEL))
    assert (storage / "refs" / "main").read_text() == commit  # other Hub tools find it offline too
    rec = _records(env / "xdg" / "ltxcli" / W.VERIFIED_FILE)
    assert rec[str(storage / "blobs" / _sha256(MODEL))]["sha256"] == _sha256(MODEL)
    downloads = [e for e in events if e.phase == "download"]
    verifies = [e for e in events if e.phase == "verify"]
    assert downloads[-1].done == downloads[-1].total == len(MODEL)
    assert verifies[-1].done == verifies[-1].total == len(MODEL)
    assert W.resolve("m", registry=REG) == paths[0]
    st = W.status("m", registry=REG)
    assert (st.state, st.size_on_disk, st.files[0].verified) == ("downloaded", len(MODEL), True)
    assert W.status("up", registry=REG).state == "missing"

    # Second pull: the Hub is asked for the listing only, the file is neither fetched nor re-hashed.
    n_before, events2 = len(hub.resolve_requests()), []
    assert W.pull("m", on_event=events2.append, registry=REG) == paths
    assert len(hub.resolve_requests()) == n_before
    assert not [e for e in events2 if e.phase == "verify"]
    # verify() always re-hashes.
    (vf,) = W.verify("m", registry=REG)
    assert (vf.digest, vf.source) == (_sha256(MODEL), "record")


def test_pull_with_rich_bars_and_builtin(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    with WeightsProgress(Output(), enabled=True) as bars:  # the CLI's renderer of the library's events
        (p,) = W.pull("up", on_event=bars, registry=REG)
    assert p.read_bytes() == UPSCALER
    assert capsys.readouterr().out == ""  # bars go to stderr only
    assert W.pull("tiny", registry=REG) == []
    assert W.status("tiny", registry=REG).state == "builtin"
    with pytest.raises(W.WeightsError, match="built in"):
        W.resolve("tiny", registry=REG)


def test_pull_reports_events_and_writes_nothing(hub: FakeHub, env: Path, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    """The library draws nothing: a pull (LFS file fetched by ltxcli, small files by huggingface_hub) and a verify
    report per file one FileStarted, FileProgress counts and one FileDone, and leave stdout and stderr empty."""
    events: list[W.Event] = []
    W.pull("te", on_event=events.append, registry=REG)
    W.verify("te", on_event=events.append, registry=REG)
    assert capsys.readouterr() == ("", "")
    assert all(isinstance(e, (W.FileStarted, W.FileProgress, W.FileDone)) for e in events)
    sizes = {"te/config.json": len(TE_CONFIG), "te/model.safetensors": len(TE_WEIGHTS),
             "tok/spiece.model": len(SPIECE)}
    for phase, rounds in (("download", 1), ("verify", 2)):  # pull hashes each file once, verify once more
        for rel, size in sizes.items():
            mine = [e for e in events if e.phase == phase and e.file == rel]
            starts = [i for i, e in enumerate(mine) if isinstance(e, W.FileStarted)]
            ends = [i for i, e in enumerate(mine) if isinstance(e, W.FileDone)]
            assert len(starts) == len(ends) == rounds and starts[0] == 0 and ends[-1] == len(mine) - 1, (phase, rel)
            assert all(isinstance(e, W.FileProgress) for i, e in enumerate(mine) if i not in starts + ends)
            assert (mine[-1].done, mine[-1].total) == (size, size)
            done = [e.done for e in mine]
            assert done[starts[-1]:] == sorted(done[starts[-1]:])  # counts only go up within one round


def test_pull_text_encoder_patterns(hub: FakeHub, env: Path) -> None:
    paths = W.pull("te", registry=REG)
    root = env / "hf" / "hub" / "models--acme--textenc" / "snapshots" / hub.commits["acme/textenc"]
    assert sorted(paths) == sorted(root / r for r in ("te/config.json", "te/model.safetensors", "tok/spiece.model"))
    assert not [r for r in hub.requests if r.path.endswith((".bin", "unet/model.safetensors"))]
    assert W.resolve("te", registry=REG) == root
    rec = _records(env / "xdg" / "ltxcli" / W.VERIFIED_FILE)
    by_path = {v["path"]: v for v in rec.values()}
    assert by_path["te/config.json"]["git_sha1"] == git_blob_id(TE_CONFIG)  # small file: git blob id
    assert by_path["te/model.safetensors"]["sha256"] == _sha256(TE_WEIGHTS)
    assert by_path["tok/spiece.model"]["sha256"] == _sha256(SPIECE)
    assert W.status("te", registry=REG).state == "downloaded"


def test_corrupted_download_raises_and_records_nothing(hub: FakeHub, env: Path) -> None:
    f = hub.repos["acme/video"]["model.safetensors"]
    f.served = MODEL[:1000] + bytes([MODEL[1000] ^ 1]) + MODEL[1001:]
    with pytest.raises(W.ChecksumError) as ei:
        W.pull("m", registry=REG)
    msg = _one_line(ei.value)
    assert _sha256(MODEL) in msg and _sha256(f.served) in msg and "deleted" in msg
    assert ei.value.exit_code == 4
    assert _records(env / "xdg" / "ltxcli" / W.VERIFIED_FILE) == {}
    blobs = env / "hf" / "hub" / "models--acme--video" / "blobs"
    assert not [p for p in blobs.iterdir() if not p.name.endswith(".lock")]
    with pytest.raises(W.WeightsUnavailableError):
        W.resolve("m", registry=REG)
    # Once the Hub serves the right bytes, pulling again works.
    f.served = None
    (p,) = W.pull("m", registry=REG)
    assert p.read_bytes() == MODEL


def test_resume_after_dropped_connection(hub: FakeHub) -> None:
    # Every byte received is written as it arrives; when the connection drops, the same call asks for the rest.
    cut = 100_000
    hub.repos["acme/video"]["model.safetensors"].drop_after = cut
    (p,) = W.pull("m", registry=REG)
    assert p.read_bytes() == MODEL
    gets = hub.resolve_requests("GET")
    assert [g.range for g in gets] == [None, f"bytes={cut}-"]
    assert W.status("m", registry=REG).files[0].verified


def _partial_of(env: Path, mode: str, data: bytes) -> Path:
    """Where an interrupted download of model.safetensors of acme/video is kept (hand-written, not from ltxcli)."""
    if mode == "folder":
        return env / "w" / "acme" / "video" / "model.safetensors.partial"
    return env / "hf" / "hub" / "models--acme--video" / "blobs" / f"{_sha256(data)}.incomplete"


def _interrupt_after_first_bytes(seen: list[int]):
    """Ctrl-C as soon as some bytes of an LFS file (the ones ltxcli downloads itself) are on disk."""
    def progress(e: W.Event) -> None:
        if e.phase == "download" and e.done > 0 and e.file.endswith(".safetensors"):
            seen.append(e.done)
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("mode", ["hub-cache", "folder"])
def test_interrupted_download_resumes_in_the_next_run(hub: FakeHub, env: Path, mode: str) -> None:
    wd = env / "w" if mode == "folder" else None
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        W.pull("m", weights_dir=wd, on_event=_interrupt_after_first_bytes(seen), registry=REG)
    (done,) = seen
    assert 0 < done < len(MODEL)
    partial = _partial_of(env, mode, MODEL)
    assert partial.read_bytes() == MODEL[:done]  # what was reported is on disk
    # Nothing loadable, nothing recorded as verified, but `status` sees the partial download.
    assert W.path("m", weights_dir=wd, registry=REG) is None
    with pytest.raises(W.WeightsUnavailableError, match="not downloaded"):
        W.resolve("m", weights_dir=wd, registry=REG)
    verified_file = env / "w" / W.VERIFIED_FILE if wd else env / "xdg" / "ltxcli" / W.VERIFIED_FILE
    assert _records(verified_file) == {}
    st = W.status("m", weights_dir=wd, registry=REG)
    assert (st.state, st.size_on_disk) == ("partial", done)
    assert [(f.path, f.local_path, f.size, f.verified) for f in st.files] == [("model.safetensors", None, done, False)]
    assert not list(env.rglob("model.safetensors"))

    n = len(hub.resolve_requests("GET"))
    events: list[W.Event] = []
    (p,) = W.pull("m", weights_dir=wd, on_event=events.append, registry=REG)
    assert [g.range for g in hub.resolve_requests("GET")[n:]] == [f"bytes={done}-"]
    assert p.read_bytes() == MODEL and not partial.exists()
    downloads = [e for e in events if e.phase == "download"]
    assert (downloads[0].done, downloads[-1].done, downloads[-1].total) == (done, len(MODEL), len(MODEL))
    assert [e.done for e in events if e.phase == "verify"][-1] == len(MODEL)  # the whole file is hashed
    assert W.resolve("m", weights_dir=wd, registry=REG) == p
    st = W.status("m", weights_dir=wd, registry=REG)
    assert (st.state, st.size_on_disk, st.files[0].verified) == ("downloaded", len(MODEL), True)
    assert _records(verified_file)[os.path.realpath(p)]["sha256"] == _sha256(MODEL)
    if mode == "folder":
        assert p == env / "w" / "acme" / "video" / "model.safetensors" and not p.is_symlink()


def test_resumed_blob_is_laid_out_as_huggingface_hub_does(hub: FakeHub, env: Path, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from huggingface_hub import hf_hub_download, scan_cache_dir, try_to_load_from_cache

    with pytest.raises(KeyboardInterrupt):
        W.pull("m", on_event=_interrupt_after_first_bytes([]), registry=REG)
    (p,) = W.pull("m", registry=REG)
    cache, commit = env / "hf" / "hub", hub.commits["acme/video"]
    # A file huggingface_hub itself puts in the same cache, for comparison.
    theirs = Path(hf_hub_download("acme/video", "upscaler.safetensors", revision=commit, cache_dir=cache,
                                  endpoint=hub.url))
    assert os.readlink(p) == f"../../blobs/{_sha256(MODEL)}"
    assert os.readlink(theirs) == f"../../blobs/{_sha256(UPSCALER)}"
    blob, their_blob = Path(os.path.realpath(p)), Path(os.path.realpath(theirs))
    assert blob.stat().st_mode == their_blob.stat().st_mode
    assert (cache / ".locks" / "models--acme--video" / f"{_sha256(MODEL)}.lock").exists()
    assert try_to_load_from_cache("acme/video", "model.safetensors", cache_dir=cache) == str(p)  # via refs/main
    (repo,) = scan_cache_dir(cache).repos
    (rev,) = repo.revisions
    assert {f.file_name: f.size_on_disk for f in rev.files} == {"model.safetensors": len(MODEL),
                                                                 "upscaler.safetensors": len(UPSCALER)}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert hf_hub_download("acme/video", "model.safetensors", cache_dir=cache) == str(p)


def test_redirected_download_resumes_at_the_cdn(hub: FakeHub, env: Path) -> None:
    hub.repos["acme/video"]["model.safetensors"].redirect = True
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        W.pull("m", on_event=_interrupt_after_first_bytes(seen), registry=REG)
    (p,) = W.pull("m", registry=REG)
    assert p.read_bytes() == MODEL
    gets = [(g.path.startswith("/cdn/"), g.range) for g in hub.resolve_requests("GET")]
    assert gets == [(False, None), (True, None), (False, f"bytes={seen[0]}-"), (True, f"bytes={seen[0]}-")]


def test_download_sends_the_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    W.pull("m", registry=REG)
    (get,) = hub.resolve_requests("GET")
    assert get.authorization == "Bearer hf_test_token"


def test_server_ignoring_range_restarts_from_zero(hub: FakeHub, env: Path) -> None:
    partial = _partial_of(env, "hub-cache", MODEL)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 5_000)  # would corrupt the file if the 200 answer were appended to it
    hub.repos["acme/video"]["model.safetensors"].ignore_range = True
    events: list[W.Event] = []
    (p,) = W.pull("m", on_event=events.append, registry=REG)
    assert [g.range for g in hub.resolve_requests("GET")] == ["bytes=5000-"]
    assert p.read_bytes() == MODEL and not partial.exists()
    downloads = [e.done for e in events if e.phase == "download"]
    assert downloads[0] == 5_000 and 0 in downloads and downloads[-1] == len(MODEL)
    assert W.status("m", registry=REG).files[0].verified


@pytest.mark.parametrize("mode", ["hub-cache", "folder"])
def test_corrupt_partial_fails_the_check_then_downloads_cleanly(hub: FakeHub, env: Path, mode: str) -> None:
    wd = env / "w" if mode == "folder" else None
    partial = _partial_of(env, mode, MODEL)
    partial.parent.mkdir(parents=True)
    bad = MODEL[:999] + bytes([MODEL[999] ^ 1]) + MODEL[1000:4000]
    partial.write_bytes(bad)  # left by an earlier run, damaged since
    if mode == "folder":  # in the Hub cache only partials ltxcli noted (or of known hash) are attributed to an entry
        assert W.status("m", weights_dir=wd, registry=REG).state == "partial"
    with pytest.raises(W.ChecksumError) as ei:
        W.pull("m", weights_dir=wd, registry=REG)
    msg = _one_line(ei.value)
    damaged = bad + MODEL[4000:]
    assert _sha256(MODEL) in msg and _sha256(damaged) in msg and "deleted" in msg
    assert [g.range for g in hub.resolve_requests("GET")] == ["bytes=4000-"]
    assert not partial.exists() and not list(env.rglob("model.safetensors"))
    assert W.status("m", weights_dir=wd, registry=REG).state == "missing"
    verified_file = env / "w" / W.VERIFIED_FILE if wd else env / "xdg" / "ltxcli" / W.VERIFIED_FILE
    assert _records(verified_file) == {}
    (p,) = W.pull("m", weights_dir=wd, registry=REG)
    assert [g.range for g in hub.resolve_requests("GET")] == ["bytes=4000-", None]
    assert p.read_bytes() == MODEL


@pytest.mark.parametrize("mode", ["hub-cache", "folder"])
def test_rm_removes_partial_downloads(hub: FakeHub, env: Path, mode: str) -> None:
    wd = env / "w" if mode == "folder" else None
    (pu,) = W.pull("up", weights_dir=wd, registry=REG)
    with pytest.raises(KeyboardInterrupt):
        W.pull("m", weights_dir=wd, on_event=_interrupt_after_first_bytes([]), registry=REG)
    partial = _partial_of(env, mode, MODEL)
    assert partial.is_file() and W.status("m", weights_dir=wd, registry=REG).state == "partial"
    assert W.rm("m", weights_dir=wd, registry=REG) == [partial]
    assert not partial.exists() and W.status("m", weights_dir=wd, registry=REG).state == "missing"
    assert W.resolve("up", weights_dir=wd, registry=REG) == pu  # the other entry of the repo is kept
    assert W.rm("m", weights_dir=wd, registry=REG) == []


def test_partial_text_encoder_file_is_partial_not_present(hub: FakeHub, env: Path) -> None:
    # Pattern entries: a `<file>.partial` in the plain folder is neither a file of the entry nor ignored by status.
    wd = env / "w"
    with pytest.raises(KeyboardInterrupt):
        W.pull("te", weights_dir=wd, on_event=_interrupt_after_first_bytes([]), registry=REG)
    assert (wd / "acme" / "textenc" / "te" / "model.safetensors.partial").is_file()
    assert W.path("te", weights_dir=wd, registry=REG) is None
    assert W.status("te", weights_dir=wd, registry=REG).state == "partial"
    paths = W.pull("te", weights_dir=wd, registry=REG)
    assert len(paths) == 3 and not list(wd.rglob("*.partial"))
    assert W.status("te", weights_dir=wd, registry=REG).state == "downloaded"


def test_offline_missing_raises_without_network(hub: FakeHub, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(W.WeightsUnavailableError) as ei:
        W.pull("m", registry=REG)
    msg = _one_line(ei.value)
    assert msg.startswith("m is not downloaded") and "HF_HUB_OFFLINE=1 is set" in msg
    assert msg.endswith("run `ltx weights pull m` with network access")
    assert ei.value.exit_code == 3
    with pytest.raises(W.WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        W.resolve("m", registry=REG)
    assert hub.requests == []


def test_offline_with_cached_file_works(hub: FakeHub, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (p,) = W.pull("m", registry=REG)
    W.pull("te", registry=REG)
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.pull("m", registry=REG) == [p]
    assert W.resolve("m", registry=REG) == p
    assert W.resolve("te", registry=REG).is_dir()
    assert {v.path: v.source for v in W.verify("te", registry=REG)} == dict.fromkeys(
        ["te/config.json", "te/model.safetensors", "tok/spiece.model"], "record")
    assert hub.requests[n:] == []
    # A blob damaged after download is caught offline, against the hash recorded at pull time.
    blob = Path(os.path.realpath(p))
    os.chmod(blob, 0o644)
    blob.write_bytes(b"x" + MODEL[1:])
    with pytest.raises(W.ChecksumError, match=_sha256(MODEL)):
        W.verify("m", registry=REG)
    with pytest.raises(W.ChecksumError, match="with network access to replace it"):
        W.pull("m", registry=REG)
    assert hub.requests[n:] == []
    # Back online, the damaged copy is replaced.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert W.pull("m", registry=REG) == [p]
    assert p.read_bytes() == MODEL


def test_damaged_local_copy_is_downloaded_again(hub: FakeHub, env: Path) -> None:
    for weights_dir in (env / "w", None):  # folder first: a plain-folder pull copies from the Hub cache
        (p,) = W.pull("m", weights_dir=weights_dir, registry=REG)
        target = Path(os.path.realpath(p))
        os.chmod(target, 0o644)
        target.write_bytes(MODEL[:-1] + bytes([MODEL[-1] ^ 0xFF]))
        n = len(hub.resolve_requests("GET"))
        assert W.pull("m", weights_dir=weights_dir, registry=REG) == [p]
        assert p.read_bytes() == MODEL
        assert len(hub.resolve_requests("GET")) == n + 1


def test_plain_weights_dir(hub: FakeHub, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(env / "w"))
    (p,) = W.pull("m", registry=REG)
    assert p == env / "w" / "acme" / "video" / "model.safetensors"
    assert not p.is_symlink() and p.read_bytes() == MODEL
    assert _records(env / "w" / W.VERIFIED_FILE)[str(p)]["sha256"] == _sha256(MODEL)
    assert not (env / "hf" / "hub" / "models--acme--video").exists()
    assert W.weights_location() == W.WeightsLocation("folder", env / "w")
    # An explicit weights_dir wins over the environment.
    (q,) = W.pull("up", weights_dir=env / "w2", registry=REG)
    assert q == env / "w2" / "acme" / "video" / "upscaler.safetensors"
    assert W.status("up", registry=REG).state == "missing"
    assert W.resolve("up", weights_dir=env / "w2", registry=REG) == q
    # Offline, the plain folder is used as is.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    assert W.pull("m", registry=REG) == [p]
    assert hub.requests[n:] == []


def test_rm_hub_cache_removes_only_that_entry(hub: FakeHub, env: Path) -> None:
    (pm,) = W.pull("m", registry=REG)
    (pu,) = W.pull("up", registry=REG)
    W.pull("te", registry=REG)
    storage = env / "hf" / "hub" / "models--acme--video"
    removed = W.rm("m", registry=REG)
    assert removed == [pm]
    assert not pm.exists() and not (storage / "blobs" / _sha256(MODEL)).exists()
    assert pu.read_bytes() == UPSCALER and (storage / "blobs" / _sha256(UPSCALER)).exists()
    assert W.status("m", registry=REG).state == "missing"
    assert W.resolve("up", registry=REG) == pu
    # The revision now holds only `up`: huggingface_hub's delete strategy removes it, repo folder included.
    assert W.rm("up", registry=REG) == [pu]
    assert not storage.exists()
    assert W.resolve("te", registry=REG).is_dir()
    assert all(v["repo"] == "acme/textenc" for v in _records(env / "xdg" / "ltxcli" / W.VERIFIED_FILE).values())


def test_rm_plain_folder_removes_only_that_entry(hub: FakeHub, env: Path) -> None:
    w = env / "w"
    (pm,) = W.pull("m", weights_dir=w, registry=REG)
    (pu,) = W.pull("up", weights_dir=w, registry=REG)
    (w / "acme" / "video" / "mine.txt").write_text("not ours")
    assert W.rm("m", weights_dir=w, registry=REG) == [pm]
    assert not pm.exists() and pu.read_bytes() == UPSCALER
    assert (w / "acme" / "video" / "mine.txt").read_text() == "not ours"
    assert not list((w / "acme" / "video" / ".cache").rglob("model.safetensors*"))
    assert W.rm("m", weights_dir=w, registry=REG) == []


def test_status_partial(hub: FakeHub) -> None:
    reg = _registry(both={"kind": "upsampler", "description": "two files", "repo": "acme/video",
                          "files": ["model.safetensors", "upscaler.safetensors"]})
    _, pu = W.pull("both", registry=reg)
    pu.unlink()
    st = W.status("both", registry=reg)
    assert (st.state, st.size_on_disk) == ("partial", len(MODEL))
    assert W.path("both", registry=reg) is None


def test_unsafe_hub_listing_rejected_before_download(hub: FakeHub, env: Path) -> None:
    hub.add("acme/textenc", "te/../../evil.json", b"{}")
    with pytest.raises(W.UnsafePathError, match="evil"):
        W.pull("te", registry=REG)
    assert hub.resolve_requests() == []
    assert not list(env.rglob("evil.json"))


def test_dry_run_downloads_nothing(hub: FakeHub, env: Path) -> None:
    paths = W.pull("te", dry_run=True, registry=REG)
    assert [p.relative_to(paths[0].parents[1]).as_posix() for p in paths] == [
        "te/config.json", "te/model.safetensors", "tok/spiece.model"]
    assert hub.resolve_requests() == [] and not any(p.exists() for p in paths)
    planned = W.plan("te", registry=REG)
    assert [(f.size, f.present) for f in planned] == [(len(TE_CONFIG), False), (len(TE_WEIGHTS), False),
                                                     (len(SPIECE), False)]


def test_pinned_sizes_parse_and_plan_offline(hub: FakeHub, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights.toml's pinned sizes (the default model's file: 6340744492 bytes, see its comment) reach the spec's
    download size and the dry-run plan; offline, an entry whose every file pins its size is planned without the
    Hub, and one that pins none still says to go online."""
    from ltxcli.spec import resolve_spec

    (file,) = W.load_registry()["ltxv-2b-0.9.8-distilled"].files
    assert (file.path, file.size) == ("ltxv-2b-0.9.8-distilled.safetensors", 6340744492)
    assert resolve_spec("ltxv-2b-0.9.8-distilled", header=False).model.size == 6340744492
    reg = _registry(up={"kind": "upsampler", "description": "d", "repo": "acme/video",
                        "files": [{"path": "upscaler.safetensors", "size": len(UPSCALER)}]})
    assert [(f.path, f.size, f.present) for f in W.plan("up", registry=reg)] == [
        ("upscaler.safetensors", len(UPSCALER), False)]  # online: the Hub's size, the same
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (planned,) = W.plan("up", registry=reg)
    assert (planned.size, planned.present, planned.local_path.name) == (len(UPSCALER), False, "upscaler.safetensors")
    with pytest.raises(W.WeightsUnavailableError, match="unset HF_HUB_OFFLINE"):
        W.plan("up", registry=REG)
    assert hub.resolve_requests() == []


@pytest.mark.parametrize("case, pattern", [
    ("gated", r"^acme/video is gated: accept its conditions"),
    ("missing-file", r"^nothere.safetensors does not exist in acme/video"),
    ("missing-repo", r"^acme/nothing was not found on the Hub"),
    ("unreachable", r"^cannot reach the Hub \(http://127.0.0.1:\d+\) to download m"),
])
def test_hub_errors_are_one_line(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, case: str, pattern: str) -> None:
    reg = REG
    if case == "gated":
        hub.gated.add("acme/video")
    elif case == "missing-file":
        reg = _registry(m={"kind": "model", "description": "d", "repo": "acme/video", "preset": "m",
                           "files": ["nothere.safetensors"], "default": True})
    elif case == "missing-repo":
        reg = _registry(m={"kind": "model", "description": "d", "repo": "acme/nothing", "preset": "m",
                           "files": ["model.safetensors"], "default": True})
    else:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there any more: connection refused
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(W.WeightsUnavailableError, match=pattern) as ei:
        W.pull("m", registry=reg)
    _one_line(ei.value)


def test_unknown_name_suggests(hub: FakeHub) -> None:
    with pytest.raises(W.UnknownWeightsError, match="did you mean m") as ei:
        W.pull("mm", registry=REG)
    assert ei.value.exit_code == 2


def test_env_read_at_call_time(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "c1"))
    assert W.weights_location() == W.WeightsLocation("hub-cache", env / "c1")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(env / "home"))
    assert W.hub_cache_dir() == env / "home" / "hub"
    assert not W.is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.is_offline()
    # Set when huggingface_hub was imported (it then refuses every request): offline too.
    import huggingface_hub.constants as hfc

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    assert W.is_offline()


def test_load_registry_from_path(tmp_path: Path) -> None:
    src = tmp_path / "w.toml"
    src.write_text('schema = 1\n[weights.x]\nkind = "model"\ndescription = "d"\nrepo = "a/b"\n'
                   'files = [{ path = "x.safetensors", sha256 = "' + "0" * 64 + '", size = 3 }]\n'
                   'preset = "x"\ndefault = true\n')
    reg = W.load_registry(src)
    assert reg["x"].files == (W.WeightFile("x.safetensors", "0" * 64, 3),)
    src.write_text("schema = [")
    with pytest.raises(W.RegistryError, match="not valid TOML"):
        W.load_registry(src)


def test_pinned_hash_wins_over_the_hub(hub: FakeHub, env: Path) -> None:
    wrong = "0" * 64
    reg = _registry(up={"kind": "upsampler", "description": "d", "repo": "acme/video",
                        "files": [{"path": "upscaler.safetensors", "sha256": wrong}]})
    with pytest.raises(W.ChecksumError, match=f"{_sha256(UPSCALER)} does not match {wrong} \\(weights.toml\\)"):
        W.pull("up", registry=reg)
    reg = _registry(up={"kind": "upsampler", "description": "d", "repo": "acme/video",
                        "files": [{"path": "upscaler.safetensors", "sha256": _sha256(UPSCALER),
                                   "size": len(UPSCALER)}]})
    W.pull("up", registry=reg)
    assert W.verify("up", registry=reg)[0].source == "weights.toml"


def test_a_file_of_another_size_than_pinned_fails_offline(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights.toml pins only the size of some files (no hash): offline, a truncated copy passed the pull and was
    "unchecked" in verify; it is a checksum error (exit 4) now, naming the pinned size."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wd = env / "wd"
    target = wd / "Lightricks" / "LTX-Video" / "ltxv-2b-0.9.8-distilled.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"abcdef")
    for call in (lambda: W.verify("ltxv-2b-0.9.8-distilled", weights_dir=wd),
                 lambda: W.pull("ltxv-2b-0.9.8-distilled", weights_dir=wd)):
        with pytest.raises(W.ChecksumError, match=r"is 6 bytes, expected 6340744492 \(weights\.toml\)"):
            call()


def test_a_file_of_another_size_than_pinned_is_listed_partial(env: Path) -> None:
    """`ltx weights list` showed a truncated copy of a file whose size weights.toml pins as "downloaded" (and
    `ltx doctor` said the default model was downloaded); its bytes on disk are counted, its state is partial."""
    wd = env / "wd"
    target = wd / "Lightricks" / "LTX-Video" / "ltxv-2b-0.9.8-distilled.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"abcdef")
    st = W.status("ltxv-2b-0.9.8-distilled", weights_dir=wd)
    assert (st.state, st.size_on_disk, st.files[0].local_path) == ("partial", 6, None)
    assert W.status_record("ltxv-2b-0.9.8-distilled", weights_dir=wd)["state"] == "partial"


def test_rm_refuses_a_file_as_the_weights_folder_and_makes_no_folder(env: Path) -> None:
    """`ltx weights rm` with --weights-dir a file said "File exists ... pass --overwrite" (rm has no such option);
    with a folder that does not exist it made it, with a state file, though nothing was removed."""
    (env / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile is a file, not a folder"):
        W.rm("ltxv-2b-0.9", weights_dir=env / "afile")
    assert W.rm("ltxv-2b-0.9", weights_dir=env / "nowhere") == [] and not (env / "nowhere").exists()


@pytest.mark.parametrize("unreachable", [True, False])
def test_a_dry_run_plans_from_weights_toml_only_when_the_hub_cannot_be_asked(
        env: Path, monkeypatch: pytest.MonkeyPatch, unreachable: bool) -> None:
    """No network: the sizes weights.toml pins make the plan, as offline. A definite answer of the Hub (a revision
    or file that does not exist, a gated repo, a refused token) is what a pull would end with: it passes through."""
    from ltxcli.weights import download

    error = (W.HubUnreachableError("cannot reach the Hub (https://huggingface.co) to download m") if unreachable
             else W.WeightsUnavailableError("revision 'x' of acme/video does not exist on the Hub"))

    def refused(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(download, "remote_files", refused)
    name = "ltxv-2b-0.9.8-distilled"  # its one file's size is pinned
    if unreachable:
        (planned,) = W.plan(name)
        assert not planned.present and planned.size == W.load_registry()[name].files[0].size
    else:
        with pytest.raises(W.WeightsUnavailableError, match="revision 'x'"):
            W.plan(name)
