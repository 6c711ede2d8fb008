"""Prompt enhancement (ltxcli.enhance) against the official ``ltx_video.utils.prompt_enhance_utils``.

Parity: the official ``generate_cinematic_prompt`` and ltx's enhancer run on the same tiny random Llama and
Florence-2 objects (built from configs with transformers' native classes), the official side after
``torch.manual_seed(seed)`` as its callers do; the generated token ids (captions and rewrites) must be equal.
The only adapter: the official code calls the Florence-2 processor as the remote-code one was called,
``processor(texts, images)``, which the native processor takes by keyword (:class:`RemoteCallOrder`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from ltx_video.utils import prompt_enhance_utils as official
from PIL import Image
from safetensors.torch import save_file

from ltxcli.enhance import florence, generate, plan, rules, tiny
from ltxcli.enhance.enhancer import EnhancementSkippedWarning, EnhancerError, PromptEnhancer, load_captioner
from ltxcli.enhance.stage import enhance_requests, first_frame_pixels, unused_models
from ltxcli.presets import NEUTRAL, TINY_PRESET
from ltxcli.request import Condition, GenerationRequest

SEED = 1234


class RemoteCallOrder:
    """The remote-code Florence2Processor took ``(text, images)`` positionally, as the official code calls it."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, text: Any, images: Any, **kwargs: Any) -> Any:
        return self.processor(text=text, images=images, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> Any:
        return self.processor.batch_decode(*args, **kwargs)


class Recorded:
    """Records what ``model.generate`` returns (the same objects serve both sides)."""

    def __init__(self, model: Any) -> None:
        self.model, self.outputs = model, []
        self._generate = model.generate

    def __enter__(self) -> list[torch.Tensor]:
        def generate_and_record(*args: Any, **kwargs: Any) -> Any:
            out = self._generate(*args, **kwargs)
            self.outputs.append(out.clone())
            return out

        self.model.generate = generate_and_record
        return self.outputs

    def __exit__(self, *exc: object) -> None:
        del self.model.generate


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any, Any, Any]:
    return tiny.build()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(48, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
    path = tmp_path_factory.mktemp("img") / "first.png"
    Image.fromarray(pixels).save(path)
    return path


def _new_ids(outputs: list[torch.Tensor], prompt_len: int) -> torch.Tensor:
    return outputs[-1][0, prompt_len:]


def test_system_prompts_and_settings_are_the_official_ones() -> None:
    assert rules.T2V_CINEMATIC_PROMPT == official.T2V_CINEMATIC_PROMPT
    assert rules.I2V_CINEMATIC_PROMPT == official.I2V_CINEMATIC_PROMPT
    assert TINY_PRESET.prompt_enhancement_words_threshold == 0
    assert NEUTRAL.prompt_enhancement_words_threshold == rules.DEFAULT_WORDS_THRESHOLD == 120


def test_t2v_parity_token_ids(models: tuple[Any, Any, Any, Any]) -> None:
    llm, tok, _, _ = models
    prompt = "a cat surfing a big wave at sunset"
    with Recorded(llm) as outs:
        torch.manual_seed(SEED)
        ref_text = official.generate_cinematic_prompt(None, None, llm, tok, prompt, None, max_new_tokens=256)[0]
        n_in = len(tok([tok.apply_chat_template(generate.messages(prompt, None), tokenize=False,
                                                add_generation_prompt=True)]).input_ids[0])
        ref_ids = _new_ids(outs, n_in)
        before = torch.get_rng_state()
        enh = PromptEnhancer.from_models((llm, tok))
        ids = enh.enhance_ids(prompt, seed=SEED)
        assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG state is untouched
        text = enh.enhance(prompt, seed=SEED)
    print(f"t2v: {len(ids)} tokens, ids equal: {torch.equal(ids, ref_ids)}; text {text!r}")
    assert len(ids) > 0 and torch.equal(ids, ref_ids)
    assert text == ref_text
    assert enh.enhance(prompt, seed=SEED + 1) != text  # the seed drives the sampling


def test_i2v_parity_caption_and_token_ids(models: tuple[Any, Any, Any, Any], image_file: Path) -> None:
    llm, tok, cap, proc = models
    prompt = "the camera pans over the river"
    req = GenerationRequest(prompt, conditions=[Condition(str(image_file), 0)], seed=SEED, enhance_prompt="on")
    pixels = first_frame_pixels(req, TINY_PRESET)  # [1, 3, 1, H, W] as the official media loader makes it
    item = SimpleNamespace(media_item=pixels, media_frame_number=0, conditioning_strength=1.0)
    with Recorded(llm) as llm_outs, Recorded(cap) as cap_outs:
        torch.manual_seed(SEED)
        ref_text = official.generate_cinematic_prompt(cap, RemoteCallOrder(proc), llm, tok, prompt, [item],
                                                      max_new_tokens=256)[0]
        ref_caption_ids, ref_llm_out = cap_outs[-1], llm_outs[-1]
        ids = PromptEnhancer.from_models((llm, tok), (cap, proc)).enhance_ids(prompt, seed=SEED, image=pixels)
        caption_ids, llm_out = cap_outs[-1], llm_outs[-1]
    assert len(cap_outs) == len(llm_outs) == 2
    print(f"i2v: caption ids {caption_ids.tolist()}, rewrite {len(ids)} tokens")
    assert torch.equal(caption_ids, ref_caption_ids)
    assert torch.equal(llm_out, ref_llm_out)
    assert generate.decode(tok, ids) == ref_text
    caption = proc.batch_decode(caption_ids, skip_special_tokens=True)[0]
    assert f"image_caption: {caption}" in generate.messages(prompt, caption)[1]["content"]


def test_long_prompt_and_multi_condition_stay_unchanged(models: tuple[Any, Any, Any, Any], image_file: Path) -> None:
    llm, tok, cap, proc = models
    long = " ".join(["word"] * 120)
    # the official rule (inference.py): enhance when 0 < threshold and len(prompt.split()) < threshold
    assert plan("auto", long, [], 120).kind is None and plan("auto", long[5:], [], 120).kind == "t2v"
    # several conditions, or one not at frame 0: the official function returns the prompts unchanged
    item = SimpleNamespace(media_item=torch.zeros(1, 3, 1, 32, 32), media_frame_number=0)
    later = SimpleNamespace(media_item=torch.zeros(1, 3, 1, 32, 32), media_frame_number=8)
    assert official.generate_cinematic_prompt(cap, proc, llm, tok, "a cat", [item, item]) == ["a cat"]
    assert official.generate_cinematic_prompt(cap, proc, llm, tok, "a cat", [later]) == ["a cat"]
    enh = PromptEnhancer.from_models((llm, tok), (cap, proc))
    reqs = [
        GenerationRequest(long, seed=1, enhance_prompt="auto"),
        GenerationRequest("a cat", seed=1, enhance_prompt="on",
                          conditions=[Condition(str(image_file), 0), Condition(str(image_file), 8)]),
        GenerationRequest("a cat", seed=1, enhance_prompt="on", conditions=[Condition(str(image_file), 8)]),
    ]
    with Recorded(llm) as outs:
        enhance_requests(reqs, NEUTRAL, enh, warn=pytest.fail)
    assert outs == [] and all(r.enhanced_prompt is None for r in reqs)


@pytest.mark.parametrize(("words", "enhanced"), [(119, True), (120, False)])
def test_auto_threshold(models: tuple[Any, Any, Any, Any], words: int, enhanced: bool) -> None:
    llm, tok, _, _ = models
    req = GenerationRequest(" ".join(["cat"] * words), seed=3)
    enhance_requests([req], NEUTRAL, PromptEnhancer.from_models((llm, tok)), warn=pytest.fail)
    assert (req.enhanced_prompt is not None) is enhanced
    off = GenerationRequest("a cat", seed=3, enhance_prompt="off")
    enhance_requests([off], NEUTRAL, PromptEnhancer.from_models((llm, tok)), warn=pytest.fail)
    assert off.enhanced_prompt is None


def test_offline_without_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ltxcli.weights import WeightsUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LTX_WEIGHTS_DIR", str(tmp_path))
    warned: list[str] = []
    auto = GenerationRequest("a cat", seed=1)
    enhance_requests([auto], NEUTRAL, PromptEnhancer(weights_dir=tmp_path), warn=warned.append)
    assert auto.enhanced_prompt is None and len(warned) == 1 and "llama-3.2-3b-instruct" in warned[0]
    with pytest.raises(WeightsUnavailableError) as e:
        enhance_requests([GenerationRequest("a cat", seed=1, enhance_prompt="on")], NEUTRAL,
                         PromptEnhancer(weights_dir=tmp_path), warn=pytest.fail)
    assert e.value.exit_code == 3 and "llama-3.2-3b-instruct" in str(e.value)
    with warnings.catch_warnings(record=True) as caught:  # the library path: one warning, original prompt
        warnings.simplefilter("always")
        from ltxcli.request import resolve_request

        r = resolve_request(GenerationRequest("a cat"), NEUTRAL)
        assert PromptEnhancer(weights_dir=tmp_path).enhance_resolved(r, NEUTRAL, 1, None) is r
    assert [w.category for w in caught] == [EnhancementSkippedWarning]


def test_pickle_only_and_template_less_folders_are_refused(tmp_path: Path, models: tuple[Any, Any, Any, Any]) -> None:
    llm, tok, _, _ = models
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    torch.save({}, tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(EnhancerError, match="only pickle-based weights"):
        PromptEnhancer(tmp_path / "pickled").load_llm()
    plain = tmp_path / "plain"
    llm.save_pretrained(plain)
    tok.chat_template = None
    try:
        tok.save_pretrained(plain)
    finally:
        tok.chat_template = tiny.LLAMA_CHAT_TEMPLATE
    with pytest.raises(EnhancerError, match="no chat template"):
        PromptEnhancer(plain).load_llm()


def test_freeing_an_enhancer_that_loaded_nothing_collects_no_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every extension holds the pipeline's enhancer around its rewrite (ltxcli.enhance.units.enhanced) and so
    freed it after: with --enhance-prompt off nothing was loaded, yet each ran a garbage collection (0.24 s of a
    tiny batch's 0.74 s an extension); the memory of a loaded enhancer is still returned."""
    from ltxcli import offload

    released: list[int] = []
    monkeypatch.setattr(offload, "release_memory", lambda: released.append(1))
    enh = PromptEnhancer("tiny", "tiny")
    with rules.held(enh):
        pass
    enh.free()
    assert released == []
    with rules.held(enh):
        enh.llm = (torch.nn.Linear(1, 1), None)  # (as load_llm leaves it: dropped as the block exits)
    assert released == [1] and enh.modules == []


def test_local_llm_folder_gives_the_same_prompt(tmp_path: Path, models: tuple[Any, Any, Any, Any]) -> None:
    llm, tok, _, _ = models
    llm.save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    enh = PromptEnhancer(tmp_path / "llm")
    enh.load_llm()
    enh.llm = (enh.llm[0].float(), enh.llm[1])  # the official loads bfloat16; compare in the tiny model's float32
    assert enh.enhance("a dog", seed=5) == PromptEnhancer.from_models((llm, tok)).enhance("a dog", seed=5)
    enh.free()
    assert enh.modules == []


# --- Florence-2 in the remote-code layout -------------------------------------------------------------------

# native -> remote key pieces, as transformers' convert_florence2_original_pytorch_to_hf.py lists them (reversed)
TO_REMOTE = [
    (".conv.", ".proj."), (".spatial_block.conv1.", ".spatial_block.conv1.fn.dw."),
    (".spatial_block.conv2.", ".spatial_block.conv2.fn.dw."), (".channel_block.conv1.", ".channel_block.conv1.fn.dw."),
    (".channel_block.conv2.", ".channel_block.conv2.fn.dw."), (".spatial_block.norm1.", ".spatial_block.window_attn.norm."),
    (".window_attn.qkv.", ".window_attn.fn.qkv."), (".window_attn.proj.", ".window_attn.fn.proj."),
    (".channel_block.norm1.", ".channel_block.channel_attn.norm."),
    (".channel_attn.qkv.", ".channel_attn.fn.qkv."), (".channel_attn.proj.", ".channel_attn.fn.proj."),
    (".spatial_block.norm2.", ".spatial_block.ffn.norm."), (".channel_block.norm2.", ".channel_block.ffn.norm."),
    (".ffn.fc", ".ffn.fn.net.fc"),
]


def _remote_key(key: str) -> str:
    if key.startswith("model.vision_tower."):
        key = key.removeprefix("model.")
        for native, remote in TO_REMOTE:
            key = key.replace(native, remote)
        return key
    if key == "model.multi_modal_projector.image_projection.weight":
        return "image_projection"
    if key.startswith("model.multi_modal_projector."):
        return key.removeprefix("model.multi_modal_projector.").replace("image_position_embed.", "image_pos_embed.")
    if key.startswith("model.language_model."):
        return "language_model.model." + key.removeprefix("model.language_model.")
    assert key == "lm_head.weight", key
    return "language_model.lm_head.weight"


def test_remote_layout_converts_to_the_native_model(tmp_path: Path, image_file: Path) -> None:
    tok = tiny.make_caption_tokenizer(image_token=False)
    tok.image_token, tok.image_token_id = tok.mask_token, tok.mask_token_id
    ref = tiny.make_captioner(tok, image_token_id=tok.mask_token_id)
    folder = tmp_path / "promptgen"
    folder.mkdir()
    state = {_remote_key(k): (v.t() if k.endswith("image_projection.weight") else v).contiguous()
             for k, v in ref.state_dict().items() if k not in ("lm_head.weight", "model.language_model.encoder.embed_tokens.weight",
                                                             "model.language_model.decoder.embed_tokens.weight")}
    state["language_model.final_logits_bias"] = torch.zeros(1, len(tok))
    save_file(state, folder / "model.safetensors")
    text = {"model_type": "florence2_language", "vocab_size": len(tok), "d_model": 32, "encoder_layers": 1,
            "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64, "max_position_embeddings": 1100, "no_repeat_ngram_size": 3, "num_beams": 3,
            "early_stopping": True, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
            "decoder_start_token_id": 2, "forced_eos_token_id": 2, "forced_bos_token_id": 0,
            "classif_dropout": 0.1, "gradient_checkpointing": False, "normalize_before": False}
    vision = {"model_type": "davit", "dim_embed": [16, 32], "depths": [1, 1], "num_heads": [2, 2],
              "num_groups": [2, 2], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1],
              "patch_prenorm": [False, True], "window_size": 2, "projection_dim": 32, "drop_path_rate": 0.0,
              "enable_checkpoint": False, "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100},
              "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 16},
              "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"]}
    config = {"architectures": ["Florence2ForConditionalGeneration"], "model_type": "florence2",
              "auto_map": {"AutoConfig": "configuration_florence2.Florence2Config",
                           "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"},
              "projection_dim": 32, "vocab_size": len(tok), "text_config": text, "vision_config": vision}
    (folder / "config.json").write_text(json.dumps(config))
    size = {"height": tiny.CAPTION_IMAGE_SIZE, "width": tiny.CAPTION_IMAGE_SIZE}
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {"AutoProcessor": "processing_florence2.Florence2Processor"}, "processor_class": "Florence2Processor",
        "image_processor_type": "CLIPImageProcessor", "_valid_processor_keys": ["images"], "do_resize": True,
        "size": size, "crop_size": size, "do_center_crop": False, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225], "image_seq_length": tiny.CAPTION_IMAGE_TOKENS}))
    tok.save_pretrained(folder)

    model, proc = load_captioner(folder, torch.device("cpu"))
    got = model.state_dict()
    assert set(got) == set(ref.state_dict())
    assert all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    assert model.generation_config.no_repeat_ngram_size == 3  # the remote model's settings, from its text config
    ref.generation_config = florence.generation_config(config)
    img = Image.open(image_file).convert("RGB")
    ref_proc = tiny.make_caption_processor(tok)
    assert generate.caption(model, proc, [img]) == generate.caption(ref, ref_proc, [img])
    with pytest.raises(florence.CaptionerLayoutError, match="no known Florence-2 layout"):
        florence.convert_state_dict({"vision_tower.something.new": torch.zeros(1)})


def test_memory_plan_counts_the_enhancer(tmp_path: Path, models: tuple[Any, Any, Any, Any], image_file: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ltxcli.enhance.stage import NOMINAL_BYTES, enhancer_bytes
    from ltxcli.memory.plan import estimate_memory
    from ltxcli.tiny import TINY_TRANSFORMER, tiny_vae_config

    llm = models[0]
    t2v, i2v = GenerationRequest("a cat", seed=1), GenerationRequest("a cat", seed=1, conditions=[Condition(str(image_file), 0)])
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert enhancer_bytes(t2v, NEUTRAL, weights_dir=tmp_path) == NOMINAL_BYTES["llama-3.2-3b-instruct"]
    assert enhancer_bytes(i2v, NEUTRAL, weights_dir=tmp_path) == sum(NOMINAL_BYTES.values())
    # per-window prompts (counted as none before): the LLM, and the captioner when the first window holds an image
    bars = dict(seed=1, height=64, width=96, num_frames=25, window=16, overlap=8)
    llm_bytes = NOMINAL_BYTES["llama-3.2-3b-instruct"]
    assert enhancer_bytes(GenerationRequest("a cat | a dog", **bars), NEUTRAL, weights_dir=tmp_path) == llm_bytes
    assert enhancer_bytes(GenerationRequest("a cat | a dog", conditions=[Condition(str(image_file), 0)], **bars), NEUTRAL,
                          weights_dir=tmp_path) == sum(NOMINAL_BYTES.values())
    assert enhancer_bytes(GenerationRequest(" ".join(["w"] * 120)), NEUTRAL) == 0
    assert enhancer_bytes(t2v, TINY_PRESET) == 0  # auto never enhances there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert enhancer_bytes(t2v, NEUTRAL, weights_dir=tmp_path) == 0  # cannot be had: the stage will not run
    llm.save_pretrained(tmp_path / "llm")  # float32 on disk, loaded as bfloat16: 2 bytes a parameter
    n = sum(p.numel() for p in llm.parameters())
    assert enhancer_bytes(t2v, NEUTRAL, llm=str(tmp_path / "llm")) == 2 * n
    kw = dict(height=64, width=96, num_frames=9, dtype=torch.float32, weights_bytes=1000)
    plain = estimate_memory(TINY_TRANSFORMER, tiny_vae_config(), **kw)
    with_enh = estimate_memory(TINY_TRANSFORMER, tiny_vae_config(), **kw, enhancer_bytes=10**10)
    assert plain.stage("prompt enhancer") is None
    assert with_enh.peak_stage.name == "prompt enhancer" and with_enh.peak_bytes == 10**10


def test_weights_pull_with_enhancer_names_both_models() -> None:
    from ltxcli.spec import names_to_pull

    names = names_to_pull(["ltxv-2b-0.9.8-distilled"], with_enhancer=True)
    assert names[-2:] == ["llama-3.2-3b-instruct", "florence-2-large-promptgen-v2.0"]
    assert "llama-3.2-3b-instruct" not in names_to_pull(["ltxv-2b-0.9.8-distilled"])
    assert names_to_pull(["tiny"], with_enhancer=True) == ["tiny"]  # its enhancer models are built in


def test_an_extension_is_planned_as_image_to_video_of_the_frame_it_continues_from() -> None:
    """The official rule knows no extension: it was skipped under auto and refused under on. It is image-to-video
    now (the input frame it continues from counts as a condition at frame 0), so a keyframe besides keeps the
    prompt as a second condition does; an unknown mode is still refused up front."""
    from dataclasses import replace

    from ltxcli.extend import check_extension
    from ltxcli.request import Condition, Extension

    preset = replace(TINY_PRESET, prompt_enhancement_words_threshold=120)
    assert rules.request_plan(GenerationRequest("a cat"), preset).kind == "t2v"  # the official rule otherwise
    for mode in ("auto", "on"):
        req = GenerationRequest("a cat", extend=Extension("clip.mp4", 8), enhance_prompt=mode)
        assert rules.request_plan(req, preset).kind == "i2v"
        keyed = replace(req, conditions=[Condition("key.png", 12)])
        assert rules.request_plan(keyed, preset).reason == rules.CONDITIONS_UNSUPPORTED
        check_extension(req)
    with pytest.raises(ValueError, match="must be one of auto, on, off"):
        check_extension(GenerationRequest("a cat", extend=Extension("clip.mp4", 8), enhance_prompt="bad"))


class _Recording:
    """A :class:`PromptEnhancer` stand-in for the CLI's stage: records each rewrite asked for, as
    ``(prompt, seed, caption image shape or None)``, and returns ``"<prompt> rewritten"``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, tuple[int, ...] | None]] = []

    def available(self, image: bool, modes: Any, warn: Any, download: Any = None) -> bool:
        return True

    def __enter__(self) -> _Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def enhance(self, prompt: str, *, seed: int, image: Any = None) -> str:
        self.calls.append((prompt, seed, None if image is None else tuple(image.shape)))
        return f"{prompt} rewritten"


def test_per_window_prompts_are_enhanced_each_once_in_their_window_mode(image_file: Path) -> None:
    """'a | b' and prompt schedules were refused under on and kept under auto. Each distinct window prompt is now
    rewritten once (a prompt two windows take, once) under the run's seed, by the official rule for the first
    window that takes it, as one generation: image-to-video (its first frame captioned) for the window holding
    the frame-0 image, text-to-video for a window without conditions, kept for a window holding a keyframe at a
    later frame and, under auto, for a prompt of at least the threshold's words. A rewrite already mapped (a
    redo's) is not made again."""
    from dataclasses import replace

    preset = replace(TINY_PRESET, prompt_enhancement_words_threshold=120)
    # 25 frames in windows of 16 (2 latent frames) with 8 shared: windows start at frames 0, 8, 16
    size = dict(height=64, width=96, num_frames=25, window=16, overlap=8)
    image = str(image_file)
    bars = GenerationRequest("a cat walks | a dog runs | a cat walks", conditions=[Condition(image, 0)], seed=3,
                             **size)
    long = " ".join(["word"] * 120)
    schedule = [{"start": 0, "prompt": long}, {"start": 8, "prompt": "a bird flies"},
                {"start": 16, "prompt": "a fish swims"}]
    keyed = GenerationRequest("", prompt_schedule=schedule, conditions=[Condition(image, 20)], seed=4, **size)
    redo = GenerationRequest("a cat | a dog", seed=5, enhance_prompt="on", enhanced_prompt={"a cat": "given"},
                             **size)
    enhancer = _Recording()
    done = []
    enhance_requests([bars, keyed, redo], preset, enhancer, warn=pytest.fail,  # type: ignore[arg-type]
                     on_enhanced=done.append)
    # the 64x48 image cropped to the video's 3:2 at its own size (the official media handling): 64x42
    assert enhancer.calls == [("a cat walks", 3, (1, 3, 1, 42, 64)), ("a dog runs", 3, None),
                              ("a bird flies", 4, None), ("a dog", 5, None)]
    assert bars.enhanced_prompt == {"a cat walks": "a cat walks rewritten", "a dog runs": "a dog runs rewritten"}
    assert keyed.enhanced_prompt == {"a bird flies": "a bird flies rewritten"}
    assert redo.enhanced_prompt == {"a cat": "given", "a dog": "a dog rewritten"}
    assert done == [bars, keyed, redo]  # once each, after its last rewrite
    enhance_requests([bars, keyed, redo], preset, enhancer, warn=pytest.fail)  # type: ignore[arg-type]
    assert len(enhancer.calls) == 4  # every rewrite is there: none is made again


def test_enhance_refuses_a_missing_prompt_and_a_negative_seed(models: tuple[Any, Any, Any, Any]) -> None:
    """``enhance(None, seed=-1)`` returned a rewrite of the text 'None'."""
    enhancer = PromptEnhancer.from_models(models[:2])
    with pytest.raises(TypeError, match="prompt=None must be a string"):
        enhancer.enhance(None, seed=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed=-1 must be a non-negative integer"):
        enhancer.enhance("a cat", seed=-1)


def test_unused_enhancer_models_are_those_no_rewrite_uses() -> None:
    """``--enhancer-model`` is used where a prompt is rewritten, ``--caption-model`` where an image-to-video one is
    (its first frame captioned); the others are named, to be warned of (ltx generate dropped them in silence)."""
    llm_unused = "--enhancer-model is ignored: no prompt is rewritten (see --enhance-prompt)"
    cap_unused = "--caption-model is ignored: no image-to-video prompt is rewritten (it captions their first frame)"
    t2v, i2v = GenerationRequest("a cat", enhance_prompt="on"), GenerationRequest(
        "a cat", conditions=[Condition("first.png", 0)], enhance_prompt="on")
    off = GenerationRequest("a cat", enhance_prompt="off")
    models = {"llm": "tiny", "captioner": "tiny"}
    assert unused_models([off], TINY_PRESET, **models) == [llm_unused, cap_unused]
    assert unused_models([t2v], TINY_PRESET, **models) == [cap_unused]
    assert unused_models([i2v], TINY_PRESET, **models) == []
    assert unused_models([off, i2v], TINY_PRESET, **models) == []  # a batch: one item's rewrite uses both
    assert unused_models([off], TINY_PRESET) == []  # not given: nothing to say
