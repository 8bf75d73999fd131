"""Running a ``torch.nn.Module`` as a black box: numpy in, logits (or penultimate features) out.

Capture needs nothing from a family beyond ``forward``; the baselines also read penultimate features when the
module exposes a ``trunk`` (the built-in families and the example plugin do), and the logits otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from modelkin.errors import CaptureError


@contextmanager
def one_thread() -> Iterator[None]:
    """Probe batches are small: on a shared machine torch's thread pool costs far more than it saves (18x on
    the zoo's CNN with two busy cores), so models run on one thread and the caller's setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise CaptureError(f"the model's forward returned {type(out).__name__}, not a tensor of logits")


def forward_fn(module: torch.nn.Module) -> Any:
    """``x -> logits`` for :func:`modelkin.retrieval.capture.capture`."""

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _logits(module(torch.from_numpy(x))).float().numpy()

    return forward


def features_and_probs(module: torch.nn.Module, x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(penultimate features or logits, softmax outputs) on ``x``; NaN or a failing forward is a CaptureError."""
    try:
        with torch.no_grad():
            inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            logits = _logits(module(inputs)).double()
            trunk = getattr(module, "trunk", None)
            features = trunk(inputs).double() if callable(trunk) else logits
    except CaptureError:
        raise
    except Exception as exc:
        raise CaptureError(f"the forward of {name} raised {type(exc).__name__}: {exc}") from exc
    f, z = features.reshape(len(x), -1).numpy(), logits.reshape(len(x), -1).numpy()
    if not (np.isfinite(f).all() and np.isfinite(z).all()):
        raise CaptureError(f"the forward of {name} returned NaN or inf on the query samples")
    return f, torch.softmax(torch.from_numpy(z), dim=1).numpy()
