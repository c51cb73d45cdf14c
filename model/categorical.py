"""Drawing from categorical distributions without a host synchronisation (actions, imagined rewards and ends).

`torch.multinomial(probs, 1)` and `Categorical(logits).sample()` draw one sample as argmax(p / q) with q ~ Exp(1)
(ATen's one-sample path), but first check the probabilities on the host: on a GPU that is a synchronisation per
call, and it cannot be captured in a CUDA graph. These functions are that algorithm without the checks: from the
same generator state they draw the same samples as torch does.
"""
from __future__ import annotations

import torch
from torch import Tensor


def sample_probs(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row: probs (..., K), non-negative, rows summing to 1 -> (...) long in [0, K).
    The same draw as `torch.multinomial(probs, 1, generator=generator).squeeze(-1)`."""
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(dim=-1)


def sample_logits(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of softmax(logits (..., K)) -> (...) long. The same draw as
    `Categorical(logits=logits).sample()` (which normalises the logits first, as here)."""
    logits = logits - logits.logsumexp(dim=-1, keepdim=True)
    return sample_probs(logits.softmax(dim=-1), generator)
