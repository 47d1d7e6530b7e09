"""Training: stages, losses, trainable sets."""
