"""Serve configs and the typed boundary without Ray: YAML args, auth, request → dialogue conversion."""

from __future__ import annotations

import base64
import io

import pytest
import soundfile as sf
import yaml
from freezeempath.config import load_config
from helpers import ROOT, speech_like
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from serve.app import build_app
from serve.gateway import AudioStore, ClipCache, check_api_key
from serve.schemas import (
    CPU_PRIORITY_ENV,
    LOW_LATENCY_ENV,
    ApiError,
    ChatCompletionRequest,
    ServeArgs,
    StoredAudio,
    chat_plan,
)

CONFIGS = sorted((ROOT / "serve" / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert {p.name for p in CONFIGS} >= {"local.yaml", "gpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_serve_yaml_validates_and_builds(path):
    raw = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(raw)  # Serve's own schema (serve run / serve deploy)
    (app,) = raw["applications"]
    assert app["import_path"] == "serve.app:build_app"
    args = ServeArgs.model_validate(app["args"])
    load_config(args.model.config, args.model.overrides)  # preset and overrides load (artefact: at deploy)
    assert isinstance(build_app(app["args"]), Application)


def _shipped_args(name: str) -> ServeArgs:
    raw = yaml.safe_load((ROOT / "serve" / "configs" / name).read_text())
    return ServeArgs.model_validate(raw["applications"][0]["args"])


def _most_replicas(deployment) -> int:
    """Replicas the deployment may run at once (autoscaling's maximum, or its fixed count)."""
    scaling = deployment.autoscaling_config
    return scaling.max_replicas if scaling else deployment.num_replicas or 1


def test_local_yaml_fits_two_cpus_with_every_replica_autoscaling_may_start():
    args = _shipped_args("local.yaml")
    parts = [getattr(args.deployments, n) for n in ("gateway", "understanding", "llm", "decoder", "vocoder")]
    assert sum(d.ray_actor_options.num_cpus * _most_replicas(d) for d in parts) <= 2.0


def test_gpu_yaml_uses_fractional_gpus_on_one_card():
    args = _shipped_args("gpu.yaml")
    parts = [getattr(args.deployments, n) for n in ("understanding", "llm", "decoder", "vocoder")]
    gpus = [d.ray_actor_options.num_gpus for d in parts]
    most = [_most_replicas(d) for d in parts]
    assert all(0 < g < 1 for g in gpus)
    assert sum(g * n for g, n in zip(gpus, most, strict=True)) <= 1.0, "every replica autoscaling may start must fit"
    assert args.model.config == "paper"


def test_serve_args_reject_unknown_keys_and_conflicts():
    with pytest.raises(ValueError, match="extra_forbidden|Extra inputs"):
        ServeArgs.model_validate({"limits": {"max_body": 1}})
    with pytest.raises(ValueError, match="not both"):
        ServeArgs.model_validate({"deployments": {"llm": {"num_replicas": 2, "autoscaling_config": {}}}})
    off = ServeArgs(batching=False).batching_of("decoder")
    assert off.max_batch_size == 1 and ServeArgs().batching_of("llm").max_batch_size == 1


def test_low_latency_env_joins_each_deployments_runtime_env():
    own = {"runtime_env": {"env_vars": {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1", "X": "y"}, "pip": ["z"]}}
    args = ServeArgs.model_validate({"deployments": {"llm": {"ray_actor_options": own}}})
    assert args.low_latency and args.replica_env() == LOW_LATENCY_ENV
    llm = args.deployments.llm.serve_options(args.replica_env())["ray_actor_options"]["runtime_env"]
    assert llm["pip"] == ["z"]  # the deployment's own runtime_env stays, and its env vars win
    assert llm["env_vars"] == {**LOW_LATENCY_ENV, "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1", "X": "y"}
    vocoder = args.deployments.vocoder.serve_options(args.replica_env())["ray_actor_options"]
    assert vocoder["runtime_env"] == {"env_vars": LOW_LATENCY_ENV}
    defaults = ServeArgs(low_latency=False)
    assert "runtime_env" not in defaults.deployments.vocoder.serve_options(defaults.replica_env())["ray_actor_options"]


def test_cpu_priority_reaches_its_replicas_env_and_is_a_nice_value():
    args = ServeArgs.model_validate({"deployments": {"llm": {"cpu_priority": 19}}})
    llm = args.deployments.llm.serve_options(args.replica_env())
    assert "cpu_priority" not in llm  # not a Serve option: the replica sets it on its threads
    assert llm["ray_actor_options"]["runtime_env"]["env_vars"] == {**LOW_LATENCY_ENV, CPU_PRIORITY_ENV: "19"}
    vocoder = args.deployments.vocoder.serve_options(args.replica_env())["ray_actor_options"]
    assert CPU_PRIORITY_ENV not in vocoder["runtime_env"]["env_vars"]
    for bad in (20, -21):
        with pytest.raises(ValueError, match="cpu_priority"):
            ServeArgs.model_validate({"deployments": {"llm": {"cpu_priority": bad}}})


def test_api_keys_from_args_and_environment(monkeypatch):
    monkeypatch.setenv("FREEZEEMPATH_API_KEYS", "env-1, env-2,")
    keys = ServeArgs(api_keys=["cfg"]).keys()
    assert keys == {"cfg", "env-1", "env-2"}
    check_api_key("Bearer env-2", keys)
    check_api_key(None, frozenset())  # no keys configured: open
    for header in (None, "Bearer nope", "env-1", "Basic env-1"):
        with pytest.raises(ApiError) as err:
            check_api_key(header, keys)
        assert err.value.status == 401 and err.value.code == "invalid_api_key"


def _wav(seconds: float) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds).numpy(), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def _audio_part(seconds: float = 0.5) -> dict:
    return {"type": "input_audio", "input_audio": {"data": _wav(seconds), "format": "wav"}}


def test_chat_plan_maps_roles_parts_and_audio_ids():
    store = AudioStore(capacity=4)
    store.put("audio_1", StoredAudio("I hear you.", expires_at=2**40, voice="alloy", emotion="sad", units=3))
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "freezeempath",
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"},
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [_audio_part(), _audio_part(), {"type": "text", "text": "and this"}]},
                {"role": "assistant", "audio": {"id": "audio_1"}},
                {"role": "user", "content": "thanks"},
            ],
        }
    )
    plan = chat_plan(chat, ServeArgs(), store.get, max_seconds=8.0)
    assert plan.system_prompt == "Be brief." and plan.audio_out and plan.voice == "alloy"
    roles = [(m.role, m.text, m.audio is not None) for m in plan.messages]
    assert roles == [
        ("user", "", True),
        ("user", "and this", True),
        ("assistant", "I hear you.", False),
        ("user", "thanks", False),
    ]
    assert len(plan.clip_keys) == 2 and plan.clip_keys[0] == plan.clip_keys[1]  # same bytes, same key


@pytest.mark.parametrize(
    ("patch", "message", "param"),
    [
        ({"messages": [{"role": "assistant", "audio": {"id": "audio_gone"}}]}, "unknown or expired", "audio.id"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "unsupported role", "role"),
        ({"audio": {"voice": "robot", "format": "wav"}}, "unknown voice", "audio.voice"),
        ({"audio": {"voice": "alloy", "format": "aac"}}, "unsupported audio format", "audio.format"),
        ({"stream": True}, "must use format pcm16", "audio.format"),
        ({"max_completion_tokens": 10_000}, "exceeds the limit", "max_completion_tokens"),
    ],
)
def test_chat_plan_rejects_bad_requests(patch, message, param):
    body = {
        "model": "m",
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "messages": [{"role": "user", "content": "hi"}],
    }
    if "messages" in patch:
        patch = {"messages": patch["messages"] + body["messages"]}
    chat = ChatCompletionRequest.model_validate({**body, **patch})
    with pytest.raises(ApiError, match=message) as err:
        chat_plan(chat, ServeArgs(), AudioStore(4).get, max_seconds=8.0)
    assert err.value.status == 400 and param in (err.value.param or "")


def test_audio_store_expires_and_caps():
    store = AudioStore(capacity=2)
    store.put("old", StoredAudio("a", expires_at=0, voice="", emotion=None, units=0))
    assert store.get("old") is None
    for i in range(3):
        store.put(f"id{i}", StoredAudio("t", expires_at=2**40, voice="", emotion=None, units=0))
    assert store.get("id0") is None and store.get("id2") is not None


def test_clip_cache_drops_the_least_recently_used_past_either_bound():
    import torch
    from freezeempath.inference.understanding import ClipFeatures

    def clip(rows: int) -> ClipFeatures:  # float32: 4 bytes per value, emotion (1, 8) = 32 bytes
        return ClipFeatures(torch.zeros(rows, 8), torch.zeros(1, 8), None)  # type: ignore[arg-type]

    cache = ClipCache(capacity=3, max_bytes=3 * 32 + 32 * 10)  # three clips of 2 rows, or one of 10
    for key in "abc":
        cache.put(key, clip(2))
    cache.put("a", clip(2))  # seen again: most recent, not counted twice
    cache.put("d", clip(2))  # past 3 clips: "b" goes, the least recently used
    assert [cache.get(k) is not None for k in "abcd"] == [True, False, True, True] and cache.bytes == 3 * 96
    cache.put("e", clip(10))  # 352 bytes: "c", "a", "d" go until it fits
    assert list(cache.items) == ["e"] and cache.bytes == 352
    cache.put("f", clip(20))  # larger than the whole budget: not kept, and "e" stays
    assert list(cache.items) == ["e"] and cache.bytes == 352
