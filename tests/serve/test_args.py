"""``ServeArgs``: unknown keys and conflicts refused; the environment and options each deployment gets."""

from __future__ import annotations

import pytest

from serve.args import CPU_PRIORITY_ENV, LOW_LATENCY_ENV, ServeArgs


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
