"""The textbook gradient, by central differences: training with ``gradient: "finite_difference"``
uses it in place of backpropagation, and ``gradcheck`` compares the two."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .layers import Layer


def finite_difference(loss: Callable[[], float], params: np.ndarray, grads: np.ndarray, ops: Sequence[Layer]) -> None:
    """Nudge each weight by +-h and measure the change in the loss; writes ``grads``.

    ``grads[i] = (L(w + h e_i) - L(w - h e_i)) / 2h`` with ``h = cbrt(eps) * max(1, |w_i|)``, the step
    that balances truncation and rounding error for central differences. Dropout masks and moving
    statistics are held fixed meanwhile, so every evaluation sees the same function (and training by
    differences updates the statistics once a batch, as backpropagation does). Costs two forward
    passes per weight.
    """
    for op in ops:
        op.freeze_mask = True
    step = float(np.cbrt(np.finfo(params.dtype).eps))
    try:
        for i in range(params.size):
            w = params[i]
            h = step * max(1.0, abs(float(w)))
            params[i] = w + h
            up, high = loss(), float(params[i])
            params[i] = w - h
            down, low = loss(), float(params[i])
            params[i] = w
            grads[i] = (up - down) / (high - low)  # the step actually taken, after rounding to the dtype
    finally:
        for op in ops:
            op.freeze_mask = False
