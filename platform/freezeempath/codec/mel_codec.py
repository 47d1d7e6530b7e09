"""Speech codec (units ↔ waveform): the last step of speech output and the target side of unit labels.

In: mono float32 waveforms ``(N,)`` at ``sample_rate``. Out: discrete units ``(T,)`` int64 at
``unit_rate`` Hz (``encode``), and back: units ``(T,)`` → waveform ``(T · hop,)`` (``decode``, or
chunk by chunk with :class:`UnitStreamDecoder`).

:class:`MelKMeansCodec` needs no pretrained weights: k-means over log-mel frames gives the units, and a
small causal units-to-mel decoder (trained with L1 on log-mel; ``voice_conditioned``: also reading a
voice, a clip's mean log-mel frame) plus torchaudio's ``InverseMelScale`` and ``GriffinLim`` gives audio
back. ``decode`` runs Griffin-Lim over the whole utterance; the stream runs it
per chunk with ``context_units`` frames of left context and cross-fades chunk joins, so streamed audio
matches ``decode`` exactly for one push and spectrally (not sample by sample: Griffin-Lim phases differ)
for smaller chunks. Per-unit Griffin-Lim windows would make every chunking exact, but measured ~3× the
log-mel error of whole-utterance Griffin-Lim, so exactness was traded for quality.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import safetensors.torch
import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from freezeempath.audio import validate_waveform
from freezeempath.codec.kmeans import kmeans, nearest
from freezeempath.config import CodecConfig, EncoderConfig, ModelConfig
from freezeempath.model.masks import length_mask

# MelKMeansCodec's constructor args: CodecConfig's fields except ``kind`` and ``path``, in order
CODEC_ARGS = tuple(f.name for f in dataclasses.fields(CodecConfig) if f.name not in ("kind", "path"))
LOG_FLOOR = math.log(1e-5)  # log-mel floor: silence, and the context before the first unit
DECODER_LAYERS = 3
DECODER_KERNEL = 3
VOICE_STATE = ("voice_mean", "voice_std", "default_voice")  # voice-conditioned codecs' buffers
WEIGHTS_FILE = "codec.safetensors"
ARGS_FILE = "codec.json"


@runtime_checkable
class SpeechCodec(Protocol):
    """Waveform ↔ discrete units at a fixed rate; ``hop = sample_rate // unit_rate`` samples per unit."""

    n_units: int
    unit_rate: int
    sample_rate: int

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono ``(N,)`` float32 at ``sample_rate`` → units ``(ceil(N / hop),)`` int64 in ``[0, n_units)``."""
        ...

    def decode(self, units: torch.Tensor) -> torch.Tensor:
        """Units ``(T,)`` int64 → waveform ``(T · hop,)`` float32 at ``sample_rate``."""
        ...

    def stream(self) -> UnitStreamDecoder:
        """A fresh incremental decoder: pushes + flush give ``T · hop`` samples, like ``decode``."""
        ...


@dataclasses.dataclass(frozen=True)
class CodecFitReport:
    """What :meth:`MelKMeansCodec.fit` did.

    Attributes:
        clips: Number of clips fitted on.
        frames: Log-mel frames (= units) over all clips.
        inertia_initial: Mean squared quantisation error of the codebook before k-means.
        inertia: Mean squared quantisation error after k-means.
        mel_l1_before: Mean log-mel L1 of the decoder before training (codebook lookup).
        mel_l1_after: Mean log-mel L1 after training.
    """

    clips: int
    frames: int
    inertia_initial: float
    inertia: float
    mel_l1_before: float
    mel_l1_after: float


class UnitMelDecoder(nn.Module):
    """Causal units → log-mel residual: ``Embedding [+ Linear(voice)] → [x + GELU(causal Conv1d(x))] × L → Linear``.

    Output frame ``t`` depends on units ``t - receptive_field .. t`` (and the voice) only. The output layer
    starts at zero, so an untrained decoder adds nothing to the codebook lookup. With ``voice``, a voice
    vector ``(n_mels,)`` per sequence is added to every unit embedding: the units need not say who speaks.
    """

    def __init__(self, n_units: int, n_mels: int, hidden: int, voice: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_units, hidden)
        self.voice = nn.Linear(n_mels, hidden) if voice else None
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, DECODER_KERNEL) for _ in range(DECODER_LAYERS))
        self.out = nn.Linear(hidden, n_mels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.receptive_field = DECODER_LAYERS * (DECODER_KERNEL - 1)

    def forward(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """``units (B, T)`` int64 [, ``voice (B, n_mels)``] → log-mel residual ``(B, T, n_mels)``."""
        return self.from_embeddings(self.embed(units), voice)

    def from_embeddings(self, x: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Unit embeddings ``(B, T, H)`` [, ``voice (B, n_mels)``] → log-mel residual ``(B, T, n_mels)``
        (``forward`` after ``embed``). A voice-conditioned decoder needs ``voice``; any other refuses one."""
        if (voice is None) != (self.voice is None):
            raise ValueError("a voice-conditioned decoder needs a voice; any other takes none")
        if self.voice is not None:
            x = x + self.voice(voice)[:, None, :]  # (B, T, H): the same voice at every step
        x = x.transpose(1, 2)  # (B, H, T)
        for conv in self.convs:
            x = x + F.gelu(conv(F.pad(x, (DECODER_KERNEL - 1, 0))))  # (B, H, T), left pad = causal
        return self.out(x.transpose(1, 2))  # (B, T, n_mels)


class StreamState(enum.Enum):
    """Lifecycle of a :class:`UnitStreamDecoder`."""

    OPEN = "open"
    FLUSHED = "flushed"


class UnitStreamDecoder:
    """Incremental decoding: ``push`` units as they arrive, get their audio at once.

    State between pushes (all bounded):
        ``unit_context``: the last ``receptive_field`` units, so the causal decoder's mel for new units
        equals the mel it predicts on the whole sequence.
        ``mel_context``: the last ``context_units`` predicted log-mel frames (``LOG_FLOOR`` silence
        before the first unit): the left context of each chunk's Griffin-Lim.
        ``tail``: the previous chunk's ``hop // 2`` samples past its last frame centre, cross-faded into
        the start of the next chunk so chunks join without a click.
        ``units_pushed`` and ``state`` (``OPEN`` until ``flush``).
    ``voice`` ``(n_mels,)``: the voice of every push (voice-conditioned codecs; None: their default voice).

    Each push returns exactly ``W · hop`` samples, so pushes + flush total ``units_pushed · hop``. One push
    of all units equals ``codec.decode``; smaller chunks lack right context at their ends, so they match
    ``decode`` in log-mel, not in waveform phase.
    """

    def __init__(self, codec: MelKMeansCodec, voice: torch.Tensor | None = None) -> None:
        self.codec = codec
        self.voice = None if voice is None else codec.check_voice(voice)[None]  # (1, n_mels)
        self.state = StreamState.OPEN
        self.units_pushed = 0
        device = codec.codebook.device
        self.unit_context = torch.zeros(0, dtype=torch.long, device=device)
        self.mel_context = torch.full((codec.context_units, codec.n_mels), LOG_FLOOR, device=device)
        self.tail = torch.zeros(codec.fade_length, device=device)

    @torch.no_grad()
    def push(self, units: torch.Tensor) -> torch.Tensor:
        """Units ``(W,)`` int64 → their audio ``(W · hop,)`` float32 (empty for ``W = 0``)."""
        if self.state is StreamState.FLUSHED:
            raise RuntimeError("cannot push to a stream decoder after flush()")
        chunk = self.codec.check_units(units)
        if chunk.numel() == 0:
            return torch.zeros(0, device=self.tail.device)
        history = torch.cat([self.unit_context, chunk])  # (R' + W,)
        mel = self.codec.predict_log_mel(history[None], self.voice)[0, self.unit_context.numel() :]  # (W, n_mels)
        frames = torch.cat([self.mel_context, mel])  # (C + W, n_mels)
        audio, tail = self.codec.synthesize(frames)  # (W · hop,), (fade,)
        ramp = self.codec.fade_ramp  # (fade,)
        audio[: ramp.numel()] = (1 - ramp) * self.tail + ramp * audio[: ramp.numel()]
        keep = self.codec.decoder.receptive_field
        self.unit_context = history[max(0, history.numel() - keep) :]
        self.mel_context = frames[frames.shape[0] - self.codec.context_units :]
        self.tail = tail
        self.units_pushed += chunk.numel()
        return audio

    def flush(self) -> torch.Tensor:
        """End the stream; returns the audio still held back: always empty here (no lookahead)."""
        self.state = StreamState.FLUSHED
        return torch.zeros(0, device=self.tail.device)


class MelKMeansCodec(nn.Module):
    """k-means units over log-mel frames; units → mel by a learned causal decoder; mel → audio by Griffin-Lim.

    Frames: ``hop = sample_rate // unit_rate``; a clip of ``N`` samples is zero-padded to ``T · hop`` with
    ``T = ceil(N / hop)`` and frame ``t`` is centred on sample ``t · hop``. Predicted log-mel is
    ``codebook[unit] + decoder(units)``. Decoded audio lags by one hop: output sample ``k`` reconstructs
    input sample ``k - hop`` (the causal window for unit ``t`` ends at its frame centre). Everything is
    deterministic: fixed init seed, k-means seeded by ``fit(seed=...)``, Griffin-Lim from zero phase.
    """

    codebook: torch.Tensor  # (n_units, n_mels) buffer: k-means centroids in log-mel
    fade_ramp: torch.Tensor  # (hop // 2,) buffer: raised-cosine cross-fade weights of the next chunk

    def __init__(
        self,
        n_units: int,
        unit_rate: int,
        sample_rate: int,
        n_mels: int,
        n_fft: int,
        decoder_hidden: int,
        griffin_lim_iters: int,
        context_units: int,
        voice_conditioned: bool = False,
    ) -> None:
        super().__init__()
        self.n_units, self.unit_rate, self.sample_rate, self.n_mels = n_units, unit_rate, sample_rate, n_mels
        self.n_fft, self.decoder_hidden, self.griffin_lim_iters = n_fft, decoder_hidden, griffin_lim_iters
        self.context_units, self.voice_conditioned = context_units, voice_conditioned
        self.hop_length = _hop_length(self.args)
        self.fade_length = self.hop_length // 2
        hop, transforms = self.hop_length, torchaudio.transforms
        self.mel = transforms.MelSpectrogram(sample_rate, n_fft, hop_length=hop, n_mels=n_mels, pad_mode="constant")
        self.inverse_mel = transforms.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate, driver="gelsd")
        # least squares of fb^T x = mel is one matmul with its pseudo-inverse (the minimum-norm solution, as
        # gelsd gives); CUDA's lstsq has only gels, and batched it takes paths the CPU never does
        pinv = torch.linalg.pinv(self.inverse_mel.fb.T.double()).float()  # (n_freq, n_mels)
        self.register_buffer("mel_pinv", pinv, persistent=False)
        self.griffin_lim = transforms.GriffinLim(n_fft, griffin_lim_iters, hop_length=hop, rand_init=False)
        steps = (torch.arange(self.fade_length) + 0.5) / self.fade_length  # (fade,)
        self.register_buffer("fade_ramp", 0.5 - 0.5 * torch.cos(math.pi * steps), persistent=False)
        with torch.random.fork_rng(devices=[]):  # same untrained codec every time, global RNG untouched
            torch.manual_seed(0)
            self.register_buffer("codebook", LOG_FLOOR / 2 + 2.0 * torch.randn(n_units, n_mels))
            self.decoder = UnitMelDecoder(n_units, n_mels, decoder_hidden, voice_conditioned)
        if voice_conditioned:  # a voice is a clip's mean log-mel frame, standardised by the fitting speech's
            self.register_buffer("voice_mean", torch.zeros(n_mels))
            self.register_buffer("voice_std", torch.ones(n_mels))
            self.register_buffer("default_voice", torch.zeros(n_mels))  # the fitting clips' mean voice

    @property
    def args(self) -> dict[str, Any]:
        """The constructor args (what ``codec.json`` holds)."""
        return {name: getattr(self, name) for name in CODEC_ARGS}

    @property
    def synthesizer(self) -> MelKMeansCodec:
        """The part that turns units into audio (what a vocoder needs): this codec itself."""
        return self

    def frame_count(self, n_samples: int) -> int:
        """Units for a clip of ``n_samples``: ``ceil(n_samples / hop)``."""
        return -(-n_samples // self.hop_length)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Checked wave ``(N,)`` → log-mel ``(ceil(N / hop), n_mels)``, floored at ``LOG_FLOOR``."""
        t = self.frame_count(wave.numel())
        padded = F.pad(wave, (0, t * self.hop_length - wave.numel()))  # (T · hop,)
        mel = self.mel(padded)[:, :t]  # (n_mels, T + 1) → (n_mels, T): drop the frame past the end
        return mel.clamp(min=math.exp(LOG_FLOOR)).log().T  # (T, n_mels)

    def check_wave(self, wave: torch.Tensor) -> torch.Tensor:
        """Validate a mono clip ``(N,)``: 1-D, non-empty, finite; returns float32 on the codec's device."""
        if not isinstance(wave, torch.Tensor) or wave.ndim != 1:
            shape = tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
            raise ValueError(f"wave must be a 1-D tensor of mono samples (N,); got {shape}")
        checked = validate_waveform(wave, self.sample_rate, math.inf, target_rate=self.sample_rate)
        return checked.to(self.codebook.device)

    def check_units(self, units: torch.Tensor) -> torch.Tensor:
        """Validate units ``(T,)``: 1-D integer tensor in ``[0, n_units)``; returns int64."""
        if not isinstance(units, torch.Tensor) or units.ndim != 1:
            raise ValueError(f"units must be a 1-D tensor (T,); got {getattr(units, 'shape', type(units))}")
        if units.dtype.is_floating_point or units.dtype.is_complex or units.dtype == torch.bool:
            raise ValueError(f"units must be an integer tensor, got {units.dtype}")
        if units.numel() and (units.min() < 0 or units.max() >= self.n_units):
            low, high = int(units.min()), int(units.max())
            raise ValueError(f"units must lie in [0, {self.n_units}); got values {low}..{high}")
        return units.to(device=self.codebook.device, dtype=torch.long)

    def quantize(self, frames: torch.Tensor) -> torch.Tensor:
        """Log-mel frames ``(T, n_mels)`` → nearest codebook entries ``(T,)`` int64."""
        return nearest(frames, self.codebook)[1]

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono ``(N,)`` float32 at ``sample_rate`` → units ``(ceil(N / hop),)`` int64 in ``[0, n_units)``."""
        return self.quantize(self.log_mel(self.check_wave(wave)))

    def decode(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Units ``(T,)`` int64 [, ``voice (n_mels,)``] → waveform ``(T · hop,)`` float32; the pushes of one
        fresh stream."""
        stream = self.stream(voice)
        return torch.cat([stream.push(units), stream.flush()])

    def stream(self, voice: torch.Tensor | None = None) -> UnitStreamDecoder:
        """A fresh :class:`UnitStreamDecoder` for this codec [speaking in ``voice (n_mels,)``]."""
        return UnitStreamDecoder(self, voice)

    @torch.no_grad()
    def voice_of(self, wave: torch.Tensor) -> torch.Tensor:
        """A reference clip ``(N,)`` → its voice ``(n_mels,)`` (voice-conditioned codecs only)."""
        return self.voice_of_mel(self.log_mel(self.check_wave(wave)))

    def voice_of_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(T, n_mels)`` → voice ``(n_mels,)``: its mean frame, standardised."""
        if not self.voice_conditioned:
            raise ValueError("this codec takes no voice (fit one with model.codec.voice_conditioned=true)")
        return ((mel - self.voice_mean) / self.voice_std).mean(0)

    def check_voice(self, voice: torch.Tensor) -> torch.Tensor:
        """Validate a voice ``(n_mels,)``: finite floats, and a codec that takes one."""
        if not self.voice_conditioned:
            raise ValueError("this codec takes no voice (fit one with model.codec.voice_conditioned=true)")
        if not isinstance(voice, torch.Tensor) or tuple(voice.shape) != (self.n_mels,):
            raise ValueError(f"voice must be a tensor of shape ({self.n_mels},); got {getattr(voice, 'shape', voice)}")
        if not voice.dtype.is_floating_point or not torch.isfinite(voice).all():
            raise ValueError("voice must hold finite floats")
        return voice.to(self.codebook)

    def predict_log_mel(self, units: torch.Tensor, voice: torch.Tensor | None = None) -> torch.Tensor:
        """Units ``(B, T)`` [, voices ``(B, n_mels)``] → log-mel ``(B, T, n_mels)`` = codebook lookup +
        decoder residual. A voice-conditioned codec without ``voice`` speaks in its ``default_voice``."""
        if self.voice_conditioned and voice is None:
            voice = self.default_voice.expand(units.shape[0], -1)  # (B, n_mels)
        return self.codebook[units] + self.decoder(units, voice)

    def mel_to_linear(self, power: torch.Tensor) -> torch.Tensor:
        """Mel power ``(..., n_mels, F)`` → linear power ``(..., n_freq, F)``: torchaudio's
        ``InverseMelScale`` (least squares, clamped at 0) as one matmul, the same on every device."""
        return torch.relu(self.mel_pinv @ power)

    def synthesize(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel ``(C + W, n_mels)`` → the last ``W`` units' audio ``(W · hop,)``, tail ``(hop // 2,)``.

        One Griffin-Lim over all ``C + W`` frames (frame ``i`` centred on sample ``i · hop``). Unit ``w``'s
        audio is the hop ending at its frame's centre; the tail is the half hop after the last centre.
        """
        power = frames.clamp(min=LOG_FLOOR).exp().T  # (n_mels, C + W)
        linear = self.mel_to_linear(power)  # (n_freq, C + W)
        gl, end = self.griffin_lim, (frames.shape[0] - 1) * self.hop_length
        # the transform fixes its output length; the functional form takes this chunk's (< (C + W) · hop)
        wave = torchaudio.functional.griffinlim(
            linear, gl.window, gl.n_fft, gl.hop_length, gl.win_length, gl.power, gl.n_iter, gl.momentum,
            end + self.fade_length, gl.rand_init,
        )  # fmt: skip
        start = (self.context_units - 1) * self.hop_length
        return wave[start:end].clone(), wave[end:]

    def fit(
        self,
        waves: list[torch.Tensor],
        *,
        kmeans_iters: int = 20,
        decoder_steps: int = 300,
        lr: float = 3e-3,
        seed: int = 0,
        crops: str = "clip",
    ) -> CodecFitReport:
        """Fit the codebook (k-means++ on log-mel frames) and train a fresh decoder (Adam, log-mel L1).

        Args:
            waves: Mono clips ``(N_i,)`` at ``sample_rate``; together at least ``n_units`` frames.
            kmeans_iters: Lloyd iterations after k-means++ seeding.
            decoder_steps: Full-batch Adam steps for the units-to-mel decoder.
            lr: Adam learning rate.
            seed: Seeds k-means++ and the decoder's re-initialisation.
            crops: Only ``clip`` (kept for one fit signature): the decoder trains on whole clips, no crops.

        Returns:
            A :class:`CodecFitReport`.
        """
        if crops != "clip":
            raise ValueError(f"crops={crops!r} applies to mel_vq and encoder_vq fits; mel_kmeans takes no crops")
        mels, frames = self.fit_frames(waves)
        generator = torch.Generator(device=frames.device).manual_seed(seed)
        initial = nearest(frames, self.codebook)[0].mean().item()
        codebook, inertia = kmeans(frames, self.n_units, kmeans_iters, generator)
        self.codebook.copy_(codebook)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.decoder = UnitMelDecoder(self.n_units, self.n_mels, self.decoder_hidden, self.voice_conditioned)
            self.decoder.to(frames)
        voices = self.fit_voices(mels, frames)
        before, after = self._train_decoder(mels, voices, decoder_steps, lr)
        return CodecFitReport(len(mels), frames.shape[0], initial, inertia, before, after)

    @torch.no_grad()
    def fit_frames(self, waves: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Checked clips → their log-mels ``(T_i, n_mels)`` and all frames ``(F, n_mels)``; at least ``n_units``."""
        mels = [self.log_mel(self.check_wave(w)) for w in waves]
        frames = torch.cat(mels) if mels else torch.zeros(0, self.n_mels)
        if frames.shape[0] < self.n_units:
            raise ValueError(f"fit needs at least n_units={self.n_units} frames, got {frames.shape[0]}")
        return mels, frames

    @torch.no_grad()
    def fit_voices(self, mels: list[torch.Tensor], frames: torch.Tensor) -> torch.Tensor | None:
        """Voice-conditioned codecs: standardise by ``frames (F, n_mels)``, set the default voice to the clips'
        mean voice and return each clip's ``(n_clips, n_mels)``; None for other codecs."""
        if not self.voice_conditioned:
            return None
        self.voice_mean.copy_(frames.mean(0))
        self.voice_std.copy_(frames.std(0).clamp(min=1e-3))
        voices = torch.stack([self.voice_of_mel(m) for m in mels])
        self.default_voice.copy_(voices.mean(0))
        return voices

    def _train_decoder(
        self, mels: list[torch.Tensor], voices: torch.Tensor | None, steps: int, lr: float
    ) -> tuple[float, float]:
        """Full-batch Adam on masked log-mel L1, each clip in its voice ``(B, n_mels)`` if the codec takes one;
        returns the loss before and after."""
        lens = torch.tensor([m.shape[0] for m in mels], device=mels[0].device)
        units = nn.utils.rnn.pad_sequence([self.quantize(m) for m in mels], batch_first=True)  # (B, T)
        target = nn.utils.rnn.pad_sequence(mels, batch_first=True)  # (B, T, n_mels)
        valid = length_mask(lens, units.shape[1]).to(target.dtype)  # (B, T)

        def loss() -> torch.Tensor:
            error = (self.predict_log_mel(units, voices) - target).abs().mean(-1)  # (B, T)
            return (error * valid).sum() / valid.sum()

        optimizer = torch.optim.Adam(self.decoder.parameters(), lr=lr)
        with torch.no_grad():
            before = loss().item()
        for _ in range(steps):
            optimizer.zero_grad()
            loss().backward()
            optimizer.step()
        with torch.no_grad():
            after = loss().item()
        return before, after

    def fitted_state(self) -> dict[str, torch.Tensor]:
        """What ``save`` writes: the codebook ``(n_units, n_mels)``, the decoder's parameters and, voice-
        conditioned, the voice statistics (``VOICE_STATE``, each ``(n_mels,)``)."""
        decoder = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        voices = {k: getattr(self, k) for k in VOICE_STATE} if self.voice_conditioned else {}
        return {"codebook": self.codebook, **decoder, **voices}

    def save(self, directory: str | Path) -> Path:
        """Write ``codec.safetensors`` (fitted state) and ``codec.json`` (args); returns the directory."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.fitted_state().items()}
        safetensors.torch.save_file(tensors, str(root / WEIGHTS_FILE))
        (root / ARGS_FILE).write_text(json.dumps(self.args, indent=2) + "\n")
        return root

    @classmethod
    def load(cls, directory: str | Path) -> MelKMeansCodec:
        """Restore a codec written by :meth:`save`; unknown args, missing/extra tensors or shapes raise."""
        root = Path(directory)
        args: Any = saved_args(json.loads((root / ARGS_FILE).read_text()))
        expected = set(CODEC_ARGS)
        if not isinstance(args, dict) or set(args) != expected:
            keys = sorted(args) if isinstance(args, dict) else type(args).__name__
            raise ValueError(f"{root / ARGS_FILE}: expected keys {sorted(expected)}, got {keys}")
        codec = cls(**args)
        codec.load_fitted_state(safetensors.torch.load_file(str(root / WEIGHTS_FILE)), str(root))
        return codec

    def load_fitted_state(self, tensors: dict[str, torch.Tensor], source: str = "state") -> None:
        """Copy ``tensors`` into the codebook and decoder strictly (same names, same shapes)."""
        copy_strict(self.fitted_state(), tensors, source)


def saved_args(record: Any) -> Any:
    """``codec.json`` as read, with ``voice_conditioned: false`` where it predates voices."""
    return {"voice_conditioned": False, **record} if isinstance(record, dict) else record


@torch.no_grad()
def copy_strict(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``own`` in place; different names or shapes raise, naming ``source``."""
    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or extra:
        raise ValueError(f"{source}: codec tensors do not match (missing {missing}, unexpected {extra})")
    for name, value in own.items():
        got, want = tuple(tensors[name].shape), tuple(value.shape)
        if got != want:
            raise ValueError(f"{source}: {name} has shape {got}, but codec.json implies {want}")
        value.copy_(tensors[name])


def build_codec(cfg: CodecConfig, encoder: EncoderConfig | None = None) -> Any:
    """The codec of ``cfg.kind`` (``MelKMeansCodec``, or ``vq_codec.MelVQCodec`` for ``mel_vq`` and
    ``encoder_vq``); fitted state from ``cfg.path`` when set (its args must agree with the config).

    ``encoder_vq`` reads its units from the frozen speech encoder, so it needs ``encoder`` (the model's
    ``model.encoder``; its weights load on the first ``encode``, never for decoding).
    """
    from freezeempath.codec.content_states import SpeechContent
    from freezeempath.codec.vq import MelVQCodec  # it builds on this module

    if cfg.kind == "encoder_vq" and encoder is None:
        raise ValueError("codec kind encoder_vq needs the speech encoder's config (model.encoder)")
    args = {k: v for k, v in dataclasses.asdict(cfg).items() if k in CODEC_ARGS}
    if cfg.kind == "mel_kmeans":
        codec = MelKMeansCodec.load(cfg.path) if cfg.path else MelKMeansCodec(**args)
    else:
        content = SpeechContent(encoder) if cfg.kind == "encoder_vq" and encoder else None
        codec = MelVQCodec.load(cfg.path, content) if cfg.path else MelVQCodec(content, **args)
    wrong = [f"{k}={v} (saved {codec.args[k]})" for k, v in args.items() if codec.args[k] != v]
    if wrong:
        raise ValueError(f"codec at {cfg.path} does not match codec config: {', '.join(wrong)}")
    return codec


def build_codec_part(cfg: ModelConfig, device: str = "cpu") -> MelKMeansCodec:
    """The codec's units-to-audio side (fitted state from ``cfg.codec.path`` when set)."""
    return build_codec(cfg.codec, cfg.encoder).synthesizer.to(device).eval()


def _hop_length(args: dict[str, Any]) -> int:
    """Reject codec shapes that the front end or Griffin-Lim cannot serve; returns ``hop``."""
    units, rate, sr, fft = args["n_units"], args["unit_rate"], args["sample_rate"], args["n_fft"]
    context, iters = args["context_units"], args["griffin_lim_iters"]
    hop = sr // rate if rate > 0 else 0
    checks = {
        f"n_units must be at least 2, got {units}": units >= 2,
        f"sample_rate {sr} is not a positive multiple of unit_rate {rate}": hop > 0 and hop * rate == sr,
        f"n_fft ({fft}) must be at least 2 × hop ({hop})": fft >= 2 * hop,
        f"context_units must be at least 1, got {context}": context >= 1,
        "context_units × hop + hop / 2 must exceed n_fft / 2": context * hop + hop // 2 > fft // 2,
        f"griffin_lim_iters must be at least 1, got {iters}": iters >= 1,
    }
    problems = [message for message, ok in checks.items() if not ok]
    if problems:
        raise ValueError(f"codec: {'; '.join(problems)}")
    return hop
