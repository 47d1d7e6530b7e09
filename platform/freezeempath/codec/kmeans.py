"""k-means for codec units: k-means++ seeding and Lloyd iterations on the rows of a matrix.

In: frames ``(F, D)`` float and a ``torch.Generator``. Out: centroids ``(k, D)`` and nearest-centroid
indices ``(F,)``. Deterministic for a given generator; runs on the frames' device.
"""

from __future__ import annotations

import torch


def nearest(frames: torch.Tensor, centroids: torch.Tensor, exact: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``frames (F, D)``, ``centroids (K, D)`` → squared distance to the nearest ``(F,)`` and its index.

    ``exact=False`` uses cdist's matmul form: many times faster, but near-ties may resolve differently.
    """
    mode = "donot_use_mm_for_euclid_dist" if exact else "use_mm_for_euclid_dist"
    dist = torch.cdist(frames, centroids, compute_mode=mode).square()  # (F, K)
    best, index = dist.min(dim=1)
    return best, index


def kmeans_plus_plus(frames: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``frames (F, D)`` → ``(k, D)``; uniform draws once every frame is covered."""
    first = torch.randint(frames.shape[0], (1,), generator=generator, device=frames.device)
    chosen = [frames[first]]  # each (1, D)
    dist = (frames - chosen[0]).square().sum(1)  # (F,)
    for _ in range(1, k):
        weights = dist if dist.sum() > 0 else torch.ones_like(dist)
        pick = torch.multinomial(weights, 1, generator=generator)
        chosen.append(frames[pick])
        dist = torch.minimum(dist, (frames - chosen[-1]).square().sum(1))
    return torch.cat(chosen)


def kmeans(frames: torch.Tensor, k: int, iters: int, rng: torch.Generator) -> tuple[torch.Tensor, float]:
    """Lloyd's k-means from k-means++ seeds; empty clusters are re-seeded with the worst-fit frames.

    Returns the centroids ``(k, D)`` and the mean squared distance of frames to their centroid.
    """
    centroids = kmeans_plus_plus(frames, k, rng)
    for _ in range(iters):
        dist, assign = nearest(frames, centroids)
        counts = torch.bincount(assign, minlength=k)  # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, frames)  # (k, D)
        centroids = sums / counts.clamp(min=1)[:, None].to(frames.dtype)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            centroids[empty] = frames[dist.topk(empty.numel()).indices]
    return centroids, nearest(frames, centroids)[0].mean().item()
