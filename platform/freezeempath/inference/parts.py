"""Serving parts: build only the submodules one pipeline step needs, with its trained weights.

In: a :class:`~freezeempath.config.ModelConfig`, an optional exported artefact directory
(:mod:`freezeempath.model.checkpoint`) and a device. Out: the speech side (:class:`SpeechUnderstander`:
front end, frozen encoder, adapter, emotion extractor, aux head), the frozen LLM with its stop ids, the
speech decoder, the codec — or all of them as a :class:`~freezeempath.model.spoken_chat.FreezeEmpathModel`.

Random (untrained) parts are seeded per part from ``cfg.seed``, so every replica of a deployment and the
in-process :class:`~freezeempath.inference.generate.Responder` hold the same weights. Parts are built with
the constructors and builders of :mod:`freezeempath.model.build`; frozen parts load their base weights there.
"""

from __future__ import annotations

import logging
import threading

import torch
from torch import nn

from freezeempath.batch import Understanding
from freezeempath.config import ModelConfig
from freezeempath.data.audio import WhisperLogMel
from freezeempath.data.template import stop_token_ids
from freezeempath.model import build
from freezeempath.model.adapter import FrameStackAdapter
from freezeempath.model.codec import MelKMeansCodec, build_codec
from freezeempath.model.emotion import AuxEmotionHead, EmotionExtractor
from freezeempath.model.encoder import SpeechEncoder
from freezeempath.model.llm import FrozenLLM
from freezeempath.model.speech_decoder import SpeechDecoder
from freezeempath.model.spoken_chat import FreezeEmpathModel, param_dtype, understand_encoded

log = logging.getLogger(__name__)

_PART_SEEDS = {"encoder": 1, "llm": 2, "adapter": 3, "emotion": 4, "aux_head": 5, "speech_decoder": 6}


class SpeechUnderstander(nn.Module):
    """The speech side: waveform clips → S rows, E and aux logits (children named as in the full model)."""

    def __init__(
        self,
        frontend: WhisperLogMel,
        encoder: SpeechEncoder,
        adapter: FrameStackAdapter,
        emotion: EmotionExtractor,
        aux_head: AuxEmotionHead,
    ) -> None:
        super().__init__()
        self.frontend, self.encoder, self.adapter = frontend, encoder.requires_grad_(False), adapter
        self.emotion, self.aux_head = emotion, aux_head
        # SpeechEncoder.forward collects block outputs with forward hooks on the shared layers, so two
        # threads encoding at once would mix their layer stacks: one encoder pass at a time.
        self._encoder_lock = threading.Lock()

    @torch.no_grad()
    def understand(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> Understanding:
        """``mel (C, n_mels, F)``, ``mel_lens (C,)`` → S, its lengths, E and aux logits per clip.

        Same computation as ``FreezeEmpathModel.understand`` (both end in ``understand_encoded``).
        """
        with self._encoder_lock:
            enc = self.encoder(mel.to(param_dtype(self.encoder)), mel_lens)
        return understand_encoded(enc, self.adapter, self.emotion, self.aux_head)


def _seed(cfg: ModelConfig, part: str) -> None:
    torch.manual_seed(cfg.seed * 100 + _PART_SEEDS[part])


def _load(module: nn.Module, trained: str | None) -> None:
    if trained:
        from freezeempath.model.checkpoint import load_trained

        loaded = load_trained(module, trained)
        log.info("loaded trained %s from %s", ", ".join(loaded) or "nothing", trained)


def build_understander(cfg: ModelConfig, trained: str | None = None, device: str = "cpu") -> SpeechUnderstander:
    """Front end, frozen encoder (base weights), adapter, emotion extractor and aux head."""
    d_llm, d_enc = cfg.llm.hidden, cfg.encoder.d_model
    frontend = WhisperLogMel(cfg.encoder.n_mels, cfg.encoder.window_frames, cfg.encoder.sample_rate)
    _seed(cfg, "encoder")
    encoder = build.build_encoder(cfg.encoder, load_weights=True)
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
    part.to(device).eval()
    part.frontend.to("cpu")  # the front end pads clips on the CPU; its mel goes to the device after
    return part


def build_llm_part(cfg: ModelConfig, device: str = "cpu") -> tuple[FrozenLLM, list[int]]:
    """The frozen LLM (base weights) and the token ids that end a reply."""
    _seed(cfg, "llm")
    llm = build.build_llm(cfg.llm, load_weights=True)
    if llm.vocab_size != cfg.llm.vocab:
        raise ValueError(f"llm.vocab={cfg.llm.vocab} but the loaded LLM has {llm.vocab_size} embedding rows")
    if cfg.dtype == "bfloat16":
        llm.to(torch.bfloat16)
    return llm.to(device).eval(), stop_token_ids(llm.tokenizer)


def build_decoder_part(cfg: ModelConfig, trained: str | None = None, device: str = "cpu") -> SpeechDecoder:
    """The speech decoder over the LLM's vocabulary (``cfg.llm.vocab``) and the codec's units."""
    _seed(cfg, "speech_decoder")
    decoder = build.build_speech_decoder(cfg.speech_decoder, cfg.llm.hidden, cfg.llm.vocab, cfg.codec.n_units)
    _load(nn.ModuleDict({"speech_decoder": decoder}), trained)
    return decoder.to(device).eval()


def build_codec_part(cfg: ModelConfig, device: str = "cpu") -> MelKMeansCodec:
    """The codec's units-to-audio side (fitted state from ``cfg.codec.path`` when set)."""
    return build_codec(cfg.codec, cfg.encoder).synthesizer.to(device).eval()


def build_full_model(cfg: ModelConfig, trained: str | None = None, device: str = "cpu") -> FreezeEmpathModel:
    """Every part, composed; the same weights as the per-deployment builders."""
    understander = build_understander(cfg, trained, device)
    llm, stop_ids = build_llm_part(cfg, device)
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
