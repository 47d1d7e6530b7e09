"""Serving a model bundle (``args.model.bundle``) through the ``openai`` SDK: the bundle's trained parts are
what the app runs, and a bundle trained against other frozen weights never comes up."""

from __future__ import annotations

import json
import re

import openai
import pytest
import torch
import yaml
from freezeempath.bundle import StepRecord, build_bundle_model, write_bundle
from freezeempath.inference.understanding import understand_clips
from freezeempath.model.spoken_chat import SpeechUnderstander
from helpers import ROOT, serve_on_loopback, speech_like, wav_b64

pytestmark = pytest.mark.ray

PORT = 8767


def bundle_args(bundle: str):
    """``serve/configs/local.yaml`` args serving ``bundle``, one replica each."""
    from serve.args import ServeArgs

    args = yaml.safe_load((ROOT / "serve" / "configs" / "local.yaml").read_text())["applications"][0]["args"]
    args["model"].update(bundle=bundle, overrides=["model.generation.max_new_tokens=6"])
    for options in args["deployments"].values():
        options.pop("autoscaling_config", None)
        options["num_replicas"] = 1
    return ServeArgs.model_validate(args)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from freezeempath.config import load_config
    from freezeempath.model.build import build_model

    cfg = load_config("tiny")
    model = build_model(cfg.model)
    with torch.no_grad():  # "trained": the served emotion must come from these weights, not the seeded ones
        for p in model.emotion.parameters():
            p.add_(0.3 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    write_bundle(out, model, cfg, StepRecord("s2a", ("emotion",)))
    return out


@pytest.fixture(scope="module")
def serve_session():
    yield from serve_on_loopback(PORT)


def test_the_app_serves_the_bundles_trained_parts(serve_session, bundle):
    from serve.app import build_app

    serve_session.run(build_app(bundle_args(str(bundle))), name="bundle", route_prefix="/")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key="test", max_retries=0, timeout=60)
    message = {
        "role": "user",
        "content": [{"type": "input_audio", "input_audio": {"data": wav_b64(), "format": "wav"}}],
    }
    reply = client.chat.completions.create(model="freezeempath", messages=[message])
    _, model = build_bundle_model(bundle)
    understander = SpeechUnderstander.of(model.eval())
    expected = understand_clips(understander, [speech_like(1.2)])[0].emotion_result.scores
    assert reply.x_emotion["scores"] == pytest.approx(expected, abs=1e-5)
    serve_session.delete("bundle")


def test_a_bundle_of_other_frozen_weights_does_not_deploy(serve_session, bundle, tmp_path):
    from serve.app import build_app

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for item in bundle.iterdir():  # a copy of the bundle (it has no codec folder)
        (wrong / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["frozen"]["llm"] = "0" * 64
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match=r"Failed to update the deployments \['LLM'\]"):
        serve_session.run(build_app(bundle_args(str(wrong))), name="wrong", route_prefix="/wrong")
    why = serve_session.status().applications["wrong"].deployments["LLM"].message
    assert re.search(r"llm: bundle 0{64} vs configured [0-9a-f]{64}", why), why
