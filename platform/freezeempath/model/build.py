"""Build the model from config: the only reader of ``ModelConfig`` and the only code opening weight files.

In: a :class:`~freezeempath.config.ModelConfig`. Out: a :class:`FreezeEmpathModel` with frozen encoder
and LLM. ``load_weights=False`` builds random parts from the config's shapes (use it under
``torch.device("meta")`` to count parameters of the paper preset without any weights).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from freezeempath.config import EncoderConfig, LLMConfig, ModelConfig, SpeechDecoderConfig
from freezeempath.data.audio import WhisperLogMel
from freezeempath.data.template import byte_level_chat_tokenizer, stop_token_ids
from freezeempath.model.adapter import FrameStackAdapter
from freezeempath.model.emotion import AuxEmotionHead, EmotionExtractor
from freezeempath.model.encoder import SpeechEncoder
from freezeempath.model.llm import FrozenLLM
from freezeempath.model.masks import every_query_attends
from freezeempath.model.speech_decoder import SpeechDecoder
from freezeempath.model.spoken_chat import FreezeEmpathModel
from freezeempath.train.stages import ParameterCount, Stage, parameter_counts

log = logging.getLogger(__name__)


def build_model(cfg: ModelConfig, load_weights: bool = True) -> FreezeEmpathModel:
    """Build every part; frozen parts load their base weights when ``load_weights``."""
    torch.manual_seed(cfg.seed)
    llm = build_llm(cfg.llm, load_weights)
    d_llm, d_enc = llm.hidden_size, cfg.encoder.d_model
    tokenizer = llm.tokenizer
    with torch.device("cpu"):  # filterbank buffers are computed, even when the parts are built on meta
        frontend = WhisperLogMel(cfg.encoder.n_mels, cfg.encoder.window_frames, cfg.encoder.sample_rate)
    model = FreezeEmpathModel(
        frontend=frontend,
        encoder=build_encoder(cfg.encoder, load_weights),
        adapter=FrameStackAdapter(cfg.adapter.k, d_enc, cfg.adapter.hidden, d_llm),
        emotion=EmotionExtractor(
            cfg.encoder.layers,
            d_enc,
            d_llm,
            cfg.emotion.gate_hidden,
            cfg.emotion.heads,
            cfg.emotion.ffn_hidden,
        ),
        aux_head=AuxEmotionHead(d_llm),
        llm=llm,
        speech_decoder=build_speech_decoder(cfg.speech_decoder, d_llm, llm.vocab_size, cfg.codec.n_units),
        stop_ids=stop_token_ids(tokenizer) if tokenizer is not None else [],
        read=cfg.speech_decoder.read,
        write=cfg.speech_decoder.write,
    )
    if cfg.dtype == "bfloat16":
        model.encoder.to(torch.bfloat16)
        model.llm.to(torch.bfloat16)
    return model.train(False)


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
