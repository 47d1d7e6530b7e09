"""The typed boundary of the Serve app: ``ServeArgs`` (the YAML ``args:``) and the OpenAI request models.

In: the ``args:`` mapping of a Serve config (``serve/configs/*.yaml``) or request JSON bodies. Out:
validated Pydantic models, and :func:`chat_plan`, which turns a chat request into library inputs
(:class:`~freezeempath.inference.dialogue.Message` list, system prompt, output settings) or raises
:class:`ApiError` (an OpenAI-style error with status, message, type, param and code)::

    serve run serve/configs/local.yaml       # args validated here by serve.app:build_app
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Literal

from freezeempath.audio import validate_waveform
from freezeempath.config import Config, load_config
from freezeempath.inference.audio_io import INPUT_FORMATS, decode_input_audio, output_formats
from freezeempath.inference.dialogue import AudioInput, Message
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Batches of one batched method that may run at once (``@serve.batch(max_concurrent_batches=...)``,
# which Serve only takes at decoration time): a long decoder batch must not hold back the next, and with
# batching off (batch size 1) streams still run side by side.
CONCURRENT_BATCHES = 4
DECODER_SESSIONS = 16  # decoder batches side by side with batching off (each reply alone)
# Replica settings of ``ServeArgs.low_latency`` (Ray 2.60; part of what RAY_SERVE_THROUGHPUT_OPTIMIZED
# sets, without its direct ingress on port 8000): user code and handle routers on the replica's own event
# loop instead of one extra thread and loop each. Safe here because every deployment runs its compute in
# worker threads (``asyncio.to_thread``), so the loop never blocks on a forward pass. A replica's gRPC
# server takes messages up to gRPC's int32 limit instead of its 4 MiB default: a request carries its
# clips' features at the LLM's width (at paper widths about 0.8 MB per clip; 16 replies joining one
# LLM call at once sent 12.5 MB on an H100), and an oversized message fails the whole call. Replicas and
# their handles flush Serve's request metrics every second instead of every 100 ms: on 2 cores an idle
# replica then uses 4 ms of CPU a second instead of 7-8 (Prometheus scrapes far less often anyway).
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
LOW_LATENCY_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(GRPC_MAX_MESSAGE_BYTES),
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
}
CPU_PRIORITY_ENV = "FREEZEEMPATH_CPU_PRIORITY"  # a replica's nice value (``DeploymentArgs.cpu_priority``)
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelArgs(_Strict):
    """Which model to serve: a preset or config YAML with overrides, or an exported artefact."""

    config: str = "demo"  # preset name (tiny, demo, paper) or a config YAML path
    overrides: list[str] = []  # dotted key.sub=value overrides, e.g. model.llm.path=/models/qwen
    weights: str | None = None  # artefact dir (trained.safetensors + config.yaml); None = untrained parts
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(1, ge=1)

    def resolve(self) -> Config:
        """The config to build: the artefact's ``config.yaml`` when ``weights`` is set, else ``config``."""
        if self.weights:
            from freezeempath.model.checkpoint import artefact_config

            return artefact_config(self.weights, self.overrides)
        return load_config(self.config, self.overrides)

    def torch_device(self) -> str:
        """``auto`` → ``cuda`` when a GPU is visible to this process, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


class Autoscaling(_Strict):
    """Ray Serve ``autoscaling_config`` (the fields we set; Serve validates values)."""

    min_replicas: int = Field(1, ge=0)
    initial_replicas: int | None = None
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0


class ActorOptions(_Strict):
    """Ray Serve ``ray_actor_options``; fractional ``num_gpus`` is logical only (no memory isolation)."""

    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: int | None = None
    accelerator_type: str | None = None
    runtime_env: dict[str, Any] | None = None


class Batching(_Strict):
    """Dynamic batching of one deployment (``@serve.batch`` for understanding and vocoder)."""

    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    # decoder only: batches side by side (understanding and vocoder use CONCURRENT_BATCHES)
    max_concurrent_batches: int = Field(1, ge=1)


class DeploymentArgs(_Strict):
    """Replicas, resources, queueing and batching of one deployment."""

    num_replicas: int | Literal["auto"] | None = None  # None: 1, or autoscaling_config's
    autoscaling_config: Autoscaling | None = None
    ray_actor_options: ActorOptions = ActorOptions()
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = -1  # -1: unbounded; past it Serve answers 503
    batching: Batching | None = None
    # nice value of the replica's threads (None: Ray's, 15). Where replicas share a node's cores, a higher
    # one for the LLM, which runs ahead of the decoder and vocoder, lets them go first; below 15 needs
    # CAP_SYS_NICE
    cpu_priority: int | None = Field(None, ge=-20, le=19)

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> DeploymentArgs:
        if self.autoscaling_config is not None and isinstance(self.num_replicas, int):
            raise ValueError("set num_replicas or autoscaling_config, not both")
        b = self.batching
        least = b.max_batch_size * max(CONCURRENT_BATCHES, b.max_concurrent_batches) if b is not None else 1
        if self.max_ongoing_requests < max(least, DECODER_SESSIONS if b is not None else 1):
            raise ValueError(f"max_ongoing_requests must be at least {least} (batch size × concurrent batches)")
        return self

    def serve_options(self, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``; ``env`` joins the replicas' env vars (the
        deployment's own ``runtime_env.env_vars`` win)."""
        options = self.model_dump(exclude={"batching", "cpu_priority"}, exclude_none=True)
        actor = self.ray_actor_options.model_dump(exclude_none=True)
        if self.cpu_priority is not None:
            env = {**(env or {}), CPU_PRIORITY_ENV: str(self.cpu_priority)}
        if env:
            runtime_env = dict(actor.get("runtime_env") or {})
            runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
            actor["runtime_env"] = runtime_env
        options["ray_actor_options"] = actor
        return options


def _batched(**kwargs: Any) -> DeploymentArgs:
    return DeploymentArgs(batching=Batching(), **kwargs)


class Deployments(_Strict):
    """Per-deployment settings; batching applies to understanding, decoder and vocoder."""

    gateway: DeploymentArgs = DeploymentArgs(ray_actor_options=ActorOptions(num_cpus=0.1), max_ongoing_requests=256)
    understanding: DeploymentArgs = _batched()
    llm: DeploymentArgs = DeploymentArgs(ray_actor_options=ActorOptions(num_cpus=0.5))
    decoder: DeploymentArgs = _batched(ray_actor_options=ActorOptions(num_cpus=0.5))
    vocoder: DeploymentArgs = _batched(max_ongoing_requests=64)


class Limits(_Strict):
    """Request limits enforced by the gateway (4xx/429 before any model work)."""

    max_body_bytes: int = Field(25 * 2**20, ge=1024)
    max_audio_seconds: float = Field(30.0, gt=0)  # also capped by the encoder window
    max_messages: int = Field(64, ge=1)
    max_completion_tokens: int = Field(256, ge=1)
    max_concurrent_requests: int = Field(32, ge=1)  # past it: 429 with Retry-After
    retry_after_s: int = Field(1, ge=0)
    audio_ttl_s: int = Field(3600, ge=1)  # assistant audio ids resolvable this long
    max_stored_audio: int = Field(10_000, ge=1)
    clip_cache_size: int = Field(256, ge=0)  # understood clips kept by content hash (re-sent history)
    clip_cache_bytes: int = Field(256 * 2**20, ge=0)  # and at most this much of their features


class ServeArgs(_Strict):
    """Everything ``serve.app:build_app`` takes (the ``args:`` of a Serve YAML)."""

    model_id: str = "freezeempath"
    model: ModelArgs = ModelArgs()
    deployments: Deployments = Deployments()
    limits: Limits = Limits()
    batching: bool = True  # master switch: False serves every batched method with batch size 1
    api_keys: list[str] = []  # with FREEZEEMPATH_API_KEYS (comma-separated); none at all = open
    voices: list[str] = list(OPENAI_VOICES)
    output_sample_rate: int = Field(24_000, ge=8_000)
    # True: calls between deployments go over each replica's gRPC server (the handle option
    # ``_by_reference=False``) and replicas run LOW_LATENCY_ENV; False: Serve's defaults (Ray actor calls).
    low_latency: bool = True

    def keys(self) -> frozenset[str]:
        """Accepted API keys from args and ``FREEZEEMPATH_API_KEYS``; empty = no auth."""
        env = os.environ.get("FREEZEEMPATH_API_KEYS", "")
        return frozenset(k.strip() for k in [*self.api_keys, *env.split(",")] if k.strip())

    def replica_env(self) -> dict[str, str]:
        """Env vars every replica gets (joined with each deployment's own ``runtime_env``)."""
        return dict(LOW_LATENCY_ENV) if self.low_latency else {}

    def batching_of(self, name: str) -> Batching:
        """A deployment's batching (batch size 1 when off)."""
        chosen = getattr(self.deployments, name).batching
        if not self.batching or chosen is None:
            return Batching(max_batch_size=1, batch_wait_timeout_s=0.0, max_concurrent_batches=DECODER_SESSIONS)
        return chosen


class ApiError(Exception):
    """An error answered as ``{"error": {message, type, param, code}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InputAudio(BaseModel):
    """``input_audio``: base64 file bytes and their declared format."""

    data: str
    format: str


class ContentPart(BaseModel):
    """A content part; only ``text`` and ``input_audio`` are accepted (checked in :func:`chat_plan`)."""

    type: str
    text: str | None = None
    input_audio: InputAudio | None = None


class AudioRef(BaseModel):
    """An earlier assistant reply's audio, by id."""

    id: str


class ChatMessage(BaseModel):
    """One chat message (unknown fields ignored)."""

    role: str
    content: str | list[ContentPart] | None = None
    audio: AudioRef | None = None


class VoiceRef(BaseModel):
    """A custom voice by id."""

    id: str


class AudioParams(BaseModel):
    """Requested output audio."""

    voice: str | VoiceRef
    format: str


class StreamOptions(BaseModel):
    """``stream_options``."""

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body (unknown fields ignored)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioParams | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1)


class EmotionRequest(BaseModel):
    """``POST /v1/audio/emotion`` body: one clip."""

    input_audio: InputAudio


@dataclass(frozen=True)
class StoredAudio:
    """What the gateway keeps per assistant audio id until ``expires_at``."""

    transcript: str
    expires_at: int
    voice: str
    emotion: str | None
    units: int


@dataclass(frozen=True)
class ChatPlan:
    """A validated chat request in library terms; ``clip_keys`` hash each audio message's input."""

    messages: list[Message]
    clip_keys: list[str]
    system_prompt: str | None
    audio_out: bool
    voice: str | None
    audio_format: str | None
    max_new_tokens: int


def audio_input(part: InputAudio, param: str, max_seconds: float) -> tuple[AudioInput, str]:
    """Decode and check one ``input_audio`` part → a mono 16 kHz clip and its content key (sha256)."""
    if part.format not in INPUT_FORMATS:
        supported = ", ".join(INPUT_FORMATS)
        raise ApiError(
            400,
            f"unsupported input audio format {part.format!r}; supported: {supported}",
            param=f"{param}.format",
            code="invalid_audio_format",
        )
    try:
        data = base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError):
        message = "input_audio.data is not valid base64"
        raise ApiError(400, message, param=f"{param}.data", code="invalid_base64") from None
    try:
        audio = decode_input_audio(data, part.format)
        clip = validate_waveform(audio.samples, audio.sample_rate, max_seconds)
    except ValueError as err:
        raise ApiError(400, str(err), param=f"{param}.data", code="invalid_audio") from None
    return AudioInput(clip, 16_000), hashlib.sha256(data).hexdigest()


def _text(message: ChatMessage, i: int) -> str:
    if isinstance(message.content, str) or message.content is None:
        return message.content or ""
    bad = [p.type for p in message.content if p.type != "text"]
    if bad:
        raise ApiError(400, f"{message.role} messages take text content only, got {bad[0]!r}", param=f"messages[{i}]")
    return "\n".join(p.text or "" for p in message.content)


def _user(message: ChatMessage, i: int, max_seconds: float) -> tuple[list[Message], list[str]]:
    """Each ``input_audio`` part becomes one spoken turn; text parts follow the message's last clip."""
    parts = message.content if isinstance(message.content, list) else [ContentPart(type="text", text=message.content)]
    clips, keys, text = [], [], []
    for j, part in enumerate(parts):
        param = f"messages[{i}].content[{j}]"
        if part.type == "text":
            text.append(part.text or "")
        elif part.type == "input_audio" and part.input_audio is not None:
            clip, key = audio_input(part.input_audio, f"{param}.input_audio", max_seconds)
            clips.append(clip)
            keys.append(key)
        else:
            raise ApiError(400, f"unsupported content part type {part.type!r} (text, input_audio)", param=param)
    joined = " ".join(t for t in text if t.strip())
    if not clips and not joined.strip():
        raise ApiError(400, f"message {i} is empty (no text and no audio)", param=f"messages[{i}].content")
    if not clips:
        return [Message("user", joined)], []
    out = [Message("user", audio=c) for c in clips[:-1]] + [Message("user", joined, clips[-1])]
    return out, keys


def _assistant(message: ChatMessage, i: int, lookup: Any) -> Message:
    text = _text(message, i)
    if message.audio is not None:
        stored = lookup(message.audio.id)
        if stored is None and not text.strip():
            raise ApiError(
                400,
                f"audio id {message.audio.id!r} is unknown or expired; send the reply's transcript as content",
                param=f"messages[{i}].audio.id",
            )
        text = stored.transcript if stored is not None else text
    if not text.strip():
        raise ApiError(400, f"assistant message {i} is empty (no content and no audio id)", param=f"messages[{i}]")
    return Message("assistant", text)


def chat_plan(chat: ChatCompletionRequest, args: ServeArgs, lookup: Any, max_seconds: float) -> ChatPlan:
    """Validate a chat request and convert it; ``lookup(audio_id) -> StoredAudio | None``.

    ``max_seconds`` caps each clip (the smaller of the limit and the encoder window).
    """
    if len(chat.messages) > args.limits.max_messages:
        raise ApiError(400, f"too many messages ({len(chat.messages)} > {args.limits.max_messages})", param="messages")
    audio_out = "audio" in (chat.modalities or ["text"])
    voice, fmt = _output_audio(chat, args) if audio_out else (None, None)
    system, messages, keys = [], [], []
    for i, message in enumerate(chat.messages):
        if message.role in ("system", "developer"):
            system.append(_text(message, i))
        elif message.role == "user":
            msgs, clip_keys = _user(message, i, max_seconds)
            messages += msgs
            keys += clip_keys
        elif message.role == "assistant":
            messages.append(_assistant(message, i, lookup))
        else:
            raise ApiError(
                400,
                f"unsupported role {message.role!r} (system, developer, user, assistant)",
                param=f"messages[{i}].role",
            )
    budget = chat.max_completion_tokens or chat.max_tokens or args.limits.max_completion_tokens
    if budget > args.limits.max_completion_tokens:
        raise ApiError(
            400,
            f"max_completion_tokens {budget} exceeds the limit {args.limits.max_completion_tokens}",
            param="max_completion_tokens",
        )
    system_prompt = "\n".join(system) if system else None
    return ChatPlan(messages, keys, system_prompt, audio_out, voice, fmt, budget)


def _output_audio(chat: ChatCompletionRequest, args: ServeArgs) -> tuple[str, str]:
    if chat.audio is None:
        raise ApiError(400, 'audio (voice and format) is required when modalities include "audio"', param="audio")
    voice = chat.audio.voice if isinstance(chat.audio.voice, str) else chat.audio.voice.id
    if voice not in args.voices:
        raise ApiError(400, f"unknown voice {voice!r}; available: {', '.join(args.voices)}", param="audio.voice")
    if chat.audio.format not in output_formats():
        supported = ", ".join(output_formats())
        raise ApiError(
            400, f"unsupported audio format {chat.audio.format!r}; supported: {supported}", param="audio.format"
        )
    if chat.stream and chat.audio.format != "pcm16":
        raise ApiError(400, f"streaming audio must use format pcm16, got {chat.audio.format!r}", param="audio.format")
    return voice, chat.audio.format
