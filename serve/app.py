"""Serve application builder: ``ServeArgs`` → ``Gateway(SpeechUnderstanding, SpeechDecoding(LLM, Vocoder))``.

In: the ``args:`` of a Serve YAML (validated as :class:`~serve.args.ServeArgs`). Out: the bound
application; each deployment takes its replicas, autoscaling, actor options, queue limits and batching
from ``args.deployments``. Run from the repository root::

    serve run --address local serve/configs/local.yaml     # CPU, demo preset, http://127.0.0.1:8765/v1
    serve run serve/configs/gpu.yaml                       # paper preset on one GPU (set the weight paths)
    # to a running cluster: ``serve`` must be importable there. Start the cluster from this directory
    # (workers import from it), or bake the repository into the image (Serve configs accept only remote
    # or local:// URIs as working_dir):
    ray start --head --port 6391 --dashboard-host 127.0.0.1 --dashboard-port 8276 --num-cpus 2
    serve deploy serve/configs/local.yaml -a http://127.0.0.1:8276
    serve status -a http://127.0.0.1:8276; serve shutdown -y -a http://127.0.0.1:8276
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve.args import ServeArgs
from serve.deployments import LLM, SpeechDecoding, SpeechUnderstanding, Vocoder
from serve.gateway import Gateway


def build_app(args: ServeArgs | dict[str, Any]) -> Application:
    """Bind the pipeline from ``args`` (a dict is validated here; Serve passes the YAML's mapping)."""
    args = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args)
    d, env = args.deployments, args.replica_env()
    understanding = SpeechUnderstanding.options(**d.understanding.serve_options(env)).bind(
        args.model, args.batching_of("understanding")
    )
    llm = LLM.options(**d.llm.serve_options(env)).bind(args.model)
    vocoder = Vocoder.options(**d.vocoder.serve_options(env)).bind(
        args.model, args.batching_of("vocoder"), args.output_sample_rate
    )
    decoder = SpeechDecoding.options(**d.decoder.serve_options(env)).bind(
        llm, vocoder, args.model, args.batching_of("decoder"), args.low_latency
    )
    return Gateway.options(**d.gateway.serve_options(env)).bind(understanding, decoder, args)
