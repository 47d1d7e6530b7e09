"""Data steps: audio decoding and features, chat templates, R/W interleaving."""
