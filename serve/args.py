"""What ``serve.app:build_app`` takes: ``ServeArgs`` (the ``args:`` of a Serve YAML) and the Ray settings it sets.

In: the ``args:`` mapping of a Serve config (``serve/configs/*.yaml``). Out: validated Pydantic models:
the model to serve (:class:`ModelArgs`), each deployment's replicas, resources, queueing and batching
(:class:`Deployments`), the gateway's request limits (:class:`Limits`), and the environment every replica
gets (:data:`LOW_LATENCY_ENV`, :data:`CPU_PRIORITY_ENV`)::

    serve run --address local serve/configs/local.yaml       # args validated here by serve.app:build_app
"""

from __future__ import annotations

import os
from typing import Any, Literal

from freezeempath.config import Config, load_config
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
# clips' features at the LLM's width, several replies joining one LLM call pass 4 MiB at paper widths,
# and an oversized message fails the whole call (serve/BENCHMARKS.md). Replicas and their handles flush
# Serve's request metrics every second instead of every 100 ms: an idle replica then spends less CPU on
# them, and Prometheus scrapes far less often anyway.
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
    """Which model to serve: a model bundle, an exported artefact, or a preset / config YAML with overrides."""

    config: str = "demo"  # preset name (tiny, demo, paper) or a config YAML path
    overrides: list[str] = []  # dotted key.sub=value overrides, e.g. model.llm.path=/models/qwen
    bundle: str | None = None  # model bundle dir (jobs.bundle): its config, trained parts and codec
    weights: str | None = None  # artefact dir (trained.safetensors + config.yaml); None = untrained parts
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> ModelArgs:
        if self.bundle and self.weights:
            raise ValueError("model.bundle and model.weights exclude each other: a bundle holds its trained parts")
        return self

    @property
    def trained(self) -> str | None:
        """Where the trained parts are: the bundle or the artefact directory."""
        return self.bundle or self.weights

    def resolve(self) -> Config:
        """The config to build: the bundle's or the artefact's ``config.yaml``, else ``config``."""
        if self.bundle:
            from freezeempath.bundle import bundle_config

            return bundle_config(self.bundle, self.overrides)
        if self.weights:
            from freezeempath.model.checkpoint import artefact_config

            return artefact_config(self.weights, self.overrides)
        return load_config(self.config, self.overrides)

    def check_frozen(self, part: str, module: Any) -> None:
        """Refuse a bundle trained against other weights of the frozen ``part`` this replica built."""
        if self.bundle:
            from freezeempath.bundle import check_frozen, module_sha256, read_manifest

            check_frozen(read_manifest(self.bundle), {part: module_sha256(module)}, self.bundle)

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
    # prompt positions (text tokens and speech rows) one request may have the LLM prefill: a prefill runs
    # as one forward pass that the replies batched beside it wait for
    max_prompt_tokens: int = Field(2048, ge=16)
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
    # names ``audio.voice`` accepts; the model speaks in one voice, the codec's, whichever is named (GET
    # /v1/models says so in ``x_audio``), so clients that always send an OpenAI voice name keep working
    voices: list[str] = ["default", *OPENAI_VOICES]
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
