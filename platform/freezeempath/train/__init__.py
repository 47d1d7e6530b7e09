"""Training: the Ray Train driver, the per-worker DeepSpeed loop, losses, metrics, optimizer, the DeepSpeed
config, the per-GPU memory estimate and the stage-3 reply-state cache."""
