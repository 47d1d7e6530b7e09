"""Ray Serve deployments of the pipeline steps; each method calls ``freezeempath.inference`` code.

What crosses each hop (CPU tensors, which pickle as NumPy arrays: ``freezeempath.inference.wire``)::

    Gateway ──clip (N,) 16 kHz──▶ SpeechUnderstanding ──ClipFeatures: S (L_S, D), E (1, D), emotion──▶ Gateway
    Gateway ──GenerationRequest──▶ SpeechDecoding.stream ──[requests joining one batch], its key──▶ LLM.generate
    LLM.generate ──per round: TextGroup | None per stream (≤ R tokens, pieces, hidden (k, D))──▶ SpeechDecoding
    SpeechDecoding ──per round: [VocodeRequest (state, units)] of its streams──▶ Vocoder.vocode_round
    Vocoder.vocode_round ──[VocodeResult (audio at 24 kHz, state)]──▶ SpeechDecoding
    SpeechDecoding.stream ──SpeechChunk (text, ≤ W units, audio, finish)──▶ Gateway
    SpeechDecoding ──(call id, index) of a stream whose caller left──▶ LLM.drop on every LLM replica

``SpeechUnderstanding`` and ``Vocoder`` batch with ``@serve.batch``. ``SpeechDecoding`` batches
continuously: a batch takes queued streams at every round boundary, each as a row of its decoder KV
cache, and opens one LLM call per group of streams it takes, keyed by the batch, so the LLM replica joins
them into one session between its steps (each reply a row of the LLM's KV cache). Finished streams leave
both caches. A batch vocodes each round of all its streams in one vocoder call, while it decodes the
next round, and keeps the streams' vocoder states. A batch belongs to no single request: a caller
leaving (client disconnect) drops only its own stream: its LLM row stops (``LLM.drop``) while the call
serves other streams, and an LLM call stops once none of its streams is left.

One module per deployment: ``understanding`` (:class:`SpeechUnderstanding`), ``llm`` (:class:`LLM` and
the session its calls share), ``speech_decoding`` (:class:`SpeechDecoding` and its batches),
``round_vocoder`` (a decoder batch's vocoder calls), ``vocoder`` (:class:`Vocoder`); ``replica`` holds
the setup every replica shares and ``outbox`` the queues between a batch and its callers. Run with::

    serve run --address local serve/configs/local.yaml
"""

from serve.deployments.llm import LLM
from serve.deployments.speech_decoding import SpeechDecoding
from serve.deployments.understanding import SpeechUnderstanding
from serve.deployments.vocoder import Vocoder

__all__ = ["LLM", "SpeechDecoding", "SpeechUnderstanding", "Vocoder"]
