"""Offline steps that write shards: corpus recipes → shards, the synthetic sample corpus, speech synthesis,
training targets by batch inference (replies, pseudo-empathy pairs, reply speech, units) and codec-fitting
speech."""
