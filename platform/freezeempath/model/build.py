"""Build the model from config: the only reader of ``ModelConfig`` and the only code opening weight files.

In: a :class:`~freezeempath.config.ModelConfig`, optionally an exported artefact directory and a device.
Out: the whole :class:`FreezeEmpathModel` (training, in-process inference) or the part one serving
deployment needs (:func:`build_understander`, :func:`build_llm_part`, :func:`build_decoder_part`), with
the same weights either way. ``load_weights=False`` builds random parts from the config's shapes (use it
under ``torch.device("meta")`` to count parameters of the paper preset without any weights).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from freezeempath.audio import WhisperLogMel
from freezeempath.chat_template import byte_level_chat_tokenizer, stop_token_ids
from freezeempath.config import EncoderConfig, LLMConfig, ModelConfig, SpeechDecoderConfig
from freezeempath.model.adapter import FrameStackAdapter
from freezeempath.model.checkpoint import load_trained
from freezeempath.model.emotion import AuxEmotionHead, EmotionExtractor
from freezeempath.model.encoder import SpeechEncoder
from freezeempath.model.llm import FrozenLLM
from freezeempath.model.masks import every_query_attends
from freezeempath.model.speech_decoder import SpeechDecoder
from freezeempath.model.spoken_chat import FreezeEmpathModel, SpeechUnderstander
from freezeempath.stages import ParameterCount, Stage, parameter_counts

log = logging.getLogger(__name__)


_PART_SEEDS = {"encoder": 1, "llm": 2, "adapter": 3, "emotion": 4, "aux_head": 5, "speech_decoder": 6}


def build_model(
    cfg: ModelConfig, load_weights: bool = True, trained: str | None = None, device: str | None = None
) -> FreezeEmpathModel:
    """Every part, composed: the same weights as the per-part builders below (one serving deployment each).

    Args:
        cfg: the model config.
        load_weights: frozen parts load their base weights (``False``: random, e.g. on the meta device).
        trained: an exported artefact directory (:mod:`freezeempath.model.checkpoint`) for the trained parts.
        device: where the parts go; ``None`` leaves them where they were built.
    """
    understander = build_understander(cfg, trained, device, load_weights)
    llm, stop_ids = build_llm_part(cfg, device, load_weights)
    model = FreezeEmpathModel(
        frontend=understander.frontend,
        encoder=understander.encoder,
        adapter=understander.adapter,
        emotion=understander.emotion,
        aux_head=understander.aux_head,
        llm=llm,
        speech_decoder=build_decoder_part(cfg, trained, device),
        stop_ids=stop_ids,
        read=cfg.speech_decoder.read,
        write=cfg.speech_decoder.write,
    )
    return model.train(False)


def build_understander(
    cfg: ModelConfig, trained: str | None = None, device: str | None = "cpu", load_weights: bool = True
) -> SpeechUnderstander:
    """Front end, frozen encoder (base weights), adapter, emotion extractor and aux head."""
    d_llm, d_enc = cfg.llm.hidden, cfg.encoder.d_model
    with torch.device("cpu"):  # filterbank buffers are computed, even when the parts are built on meta
        frontend = WhisperLogMel(cfg.encoder.n_mels, cfg.encoder.window_frames, cfg.encoder.sample_rate)
    _seed(cfg, "encoder")
    encoder = build_encoder(cfg.encoder, load_weights)
    _seed(cfg, "adapter")
    adapter = FrameStackAdapter(cfg.adapter.k, d_enc, cfg.adapter.hidden, d_llm)
    _seed(cfg, "emotion")
    e = cfg.emotion
    emotion = EmotionExtractor(cfg.encoder.layers, d_enc, d_llm, e.gate_hidden, e.heads, e.ffn_hidden)
    _seed(cfg, "aux_head")
    part = SpeechUnderstander(frontend, encoder, adapter, emotion, AuxEmotionHead(d_llm))
    if cfg.dtype == "bfloat16":
        part.encoder.to(torch.bfloat16)
    _load(part, trained)
    if device is not None:
        part.to(device)
        part.frontend.to("cpu")  # the front end pads clips on the CPU; its mel goes to the device after
    return part.eval()


def build_llm_part(
    cfg: ModelConfig, device: str | None = "cpu", load_weights: bool = True
) -> tuple[FrozenLLM, list[int]]:
    """The frozen LLM (base weights) and the token ids that end a reply (none without a tokenizer)."""
    _seed(cfg, "llm")
    llm = build_llm(cfg.llm, load_weights)
    if llm.vocab_size != cfg.llm.vocab:
        raise ValueError(f"llm.vocab={cfg.llm.vocab} but the loaded LLM has {llm.vocab_size} embedding rows")
    if cfg.dtype == "bfloat16":
        llm.to(torch.bfloat16)
    if device is not None:
        llm.to(device)
    return llm.eval(), stop_token_ids(llm.tokenizer) if llm.tokenizer is not None else []


def build_decoder_part(cfg: ModelConfig, trained: str | None = None, device: str | None = "cpu") -> SpeechDecoder:
    """The speech decoder over the LLM's vocabulary (``cfg.llm.vocab``) and the codec's units."""
    _seed(cfg, "speech_decoder")
    decoder = build_speech_decoder(cfg.speech_decoder, cfg.llm.hidden, cfg.llm.vocab, cfg.codec.n_units)
    _load(nn.ModuleDict({"speech_decoder": decoder}), trained)
    if device is not None:
        decoder.to(device)
    return decoder.eval()


def _seed(cfg: ModelConfig, part: str) -> None:
    """Untrained parts are seeded per part, so every replica of a deployment holds the same weights."""
    torch.manual_seed(cfg.seed * 100 + _PART_SEEDS[part])


def _load(module: nn.Module, trained: str | None) -> None:
    if trained:
        loaded = load_trained(module, trained)
        log.info("loaded trained %s from %s", ", ".join(loaded) or "nothing", trained)


def parameter_report(cfg: ModelConfig) -> dict[Stage, ParameterCount]:
    """Trainable and total parameters per stage, computed on the meta device (no weights, no memory)."""
    with torch.device("meta"):
        model = build_model(cfg, load_weights=False)
    return parameter_counts(model)


def whisper_config(cfg: EncoderConfig) -> Any:
    """A ``WhisperConfig`` whose encoder matches ``cfg`` (the decoder side is unused and minimal)."""
    from transformers import WhisperConfig

    return WhisperConfig(
        d_model=cfg.d_model,
        encoder_layers=cfg.layers,
        encoder_attention_heads=cfg.heads,
        encoder_ffn_dim=cfg.ffn_dim,
        num_mel_bins=cfg.n_mels,
        max_source_positions=cfg.max_positions,
        decoder_layers=1,
        decoder_attention_heads=cfg.heads,
        decoder_ffn_dim=cfg.ffn_dim,
        vocab_size=51865,
        dropout=0.0,
    )


def build_encoder(cfg: EncoderConfig, load_weights: bool) -> SpeechEncoder:
    """Whisper encoder from ``cfg``; ``ct2``/``hf`` sources load strictly (positions cut to the window)."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    encoder = WhisperEncoder(whisper_config(cfg))
    if load_weights and cfg.source != "random":
        from freezeempath.model import weights

        path = weights.resolve_asset(cfg.path)
        if cfg.source == "ct2":
            weights.verify_sha256(path, cfg.sha256)
            state = weights.whisper_encoder_state_from_ct2(path)
        else:
            state = weights.load_hf_whisper_encoder_state(path)
        state["embed_positions.weight"] = state["embed_positions.weight"][: cfg.max_positions]
        encoder.load_state_dict(state, strict=True)
    return SpeechEncoder(encoder.eval().requires_grad_(False))


def llm_config(cfg: LLMConfig) -> Any:
    """A ``Qwen2Config`` or ``LlamaConfig`` from the architecture fields of ``cfg``."""
    from transformers import LlamaConfig, Qwen2Config

    kind = Qwen2Config if cfg.arch == "qwen2" else LlamaConfig
    return kind(
        vocab_size=cfg.vocab,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.ffn,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )


def build_llm(cfg: LLMConfig, load_weights: bool) -> FrozenLLM:
    """The frozen LLM and its tokenizer; a loaded model must have the configured width."""
    from transformers import AutoModelForCausalLM

    if not load_weights or cfg.source == "random":
        tokenizer = byte_level_chat_tokenizer() if cfg.source == "random" else None
        if tokenizer is not None and len(tokenizer) > cfg.vocab:
            raise ValueError(f"llm.vocab={cfg.vocab} is smaller than the tokenizer ({len(tokenizer)} ids)")
        return FrozenLLM(every_query_attends(AutoModelForCausalLM.from_config(llm_config(cfg))), tokenizer)
    from freezeempath.model import weights

    path = weights.resolve_asset(cfg.path)
    if cfg.source == "gguf":
        weights.verify_sha256(path / cfg.file, cfg.sha256)
        cache = weights.resolve_asset(cfg.cache_dir) if cfg.cache_dir else None
        model, tokenizer = weights.load_gguf_causal_lm(path, cfg.file, cache)
    else:
        model, tokenizer = weights.load_hf_causal_lm(path)
    llm = FrozenLLM(every_query_attends(model.float()), tokenizer)
    if llm.hidden_size != cfg.hidden:
        raise ValueError(f"llm.hidden={cfg.hidden} but the model at {path} has width {llm.hidden_size}")
    return llm


def build_speech_decoder(cfg: SpeechDecoderConfig, d_llm: int, text_vocab: int, n_units: int) -> SpeechDecoder:
    """Qwen2-class decoder over text ids, ``<sep>``, units and EOS, with projection and gate."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    vocab = text_vocab + n_units + 2
    if cfg.init_path:
        lm = AutoModelForCausalLM.from_pretrained(cfg.init_path, local_files_only=True)
        lm.resize_token_embeddings(vocab)
    else:
        lm = AutoModelForCausalLM.from_config(
            Qwen2Config(
                vocab_size=vocab,
                hidden_size=cfg.hidden,
                intermediate_size=cfg.ffn,
                num_hidden_layers=cfg.layers,
                num_attention_heads=cfg.heads,
                num_key_value_heads=cfg.kv_heads,
                tie_word_embeddings=True,
                max_position_embeddings=4096,
            )
        )
    every_query_attends(lm)
    d = int(lm.get_input_embeddings().embedding_dim)
    projection: nn.Module = (
        nn.Linear(d_llm, d)
        if cfg.projection == "linear"
        else nn.Sequential(nn.Linear(d_llm, cfg.projection_hidden), nn.ReLU(), nn.Linear(cfg.projection_hidden, d))
    )
    gate = nn.Linear(2 * d, d) if cfg.gate else None
    return SpeechDecoder(lm, projection, gate, text_vocab, n_units)
