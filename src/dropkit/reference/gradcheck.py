"""Central finite-difference gradient check for reference layers, masks held fixed.

The analytic gradients from ``backward`` are compared with

    dL/dθ_i ≈ (L(θ + ε e_i) - L(θ - ε e_i)) / (2 ε),      L = Σ forward(x) ⊙ dout,

for every entry of the input and of every parameter, with ``dout`` a fixed random array. The
random masks are held fixed by restoring every generator of the layer (and its sub-layers) to its
state before the first forward pass, so each evaluation replays the same draws.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .base import Layer


def _generators(layer: Layer) -> list[np.random.Generator]:
    found: dict[int, np.random.Generator] = {}
    for module in layer.modules():
        rng = getattr(module, "rng", None)
        if isinstance(rng, np.random.Generator):
            found[id(rng)] = rng
    return list(found.values())


def _numeric_grad(f: Callable[[], float], arr: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``arr``, perturbed in place."""
    grad = np.zeros(arr.shape, dtype=np.float64)
    flat = arr.reshape(-1)  # a view: writes perturb arr itself
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        f_plus = f()
        flat[i] = orig - eps
        f_minus = f()
        flat[i] = orig
        grad.reshape(-1)[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def gradient_errors(
    layer: Layer,
    x: np.ndarray,
    *args: object,
    training: bool = True,
    eps: float = 1e-6,
    seed: int = 0,
) -> dict[str, float]:
    """Per gradient, the largest absolute difference between ``backward`` and finite differences.

    Returns, for ``"x"`` (when ``x`` is floating point) and for every parameter (named
    ``"<index>.<name>"`` by layer position in :meth:`Layer.modules`), the maximum absolute
    difference between the analytic and the numeric gradient, and under ``"<key>:scale"`` the
    maximum absolute numeric gradient, so a caller can apply any tolerance rule.
    ``args`` are passed to ``forward`` after ``x`` (e.g. the labels of a loss layer).
    """
    x = np.array(x, copy=True)
    generators = _generators(layer)
    states = [g.bit_generator.state for g in generators]

    def run() -> np.ndarray:
        for g, s in zip(generators, states, strict=True):
            g.bit_generator.state = s
        return np.asarray(layer.forward(x, *args, training=training))

    out = run()
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    dx = layer.backward(dout if out.shape else float(dout))
    analytic: dict[str, np.ndarray | None] = {}
    if np.issubdtype(x.dtype, np.floating):
        analytic["x"] = None if dx is None else np.asarray(dx)
    params: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for index, module in enumerate(layer.modules()):
        for name, value in module.params.items():
            key = f"{index}.{name}"
            params[key] = (value, module.grads[name])
            analytic[key] = np.array(module.grads[name], copy=True)

    def loss() -> float:
        return float(np.sum(run() * dout))

    errors: dict[str, float] = {}
    for key, grad in analytic.items():
        target = x if key == "x" else params[key][0]
        numeric = _numeric_grad(loss, target, eps)
        if grad is None or grad.shape != numeric.shape:
            errors[key] = float("inf")
        else:
            errors[key] = float(np.max(np.abs(grad - numeric), initial=0.0))
        errors[f"{key}:scale"] = float(np.max(np.abs(numeric), initial=0.0))
    return errors


def gradcheck(
    layer: Layer,
    x: np.ndarray,
    *args: object,
    training: bool = True,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> bool:
    """True when every analytic gradient matches central finite differences.

    A gradient passes when ``max|analytic - numeric| <= atol + rtol * max|numeric|``. Use
    float64 inputs and parameters (finite differences in float32 are too coarse) and keep inputs
    away from kinks such as ReLU's 0. Masks are held fixed across evaluations (see the module
    docstring), so stochastic layers are checked for the mask they drew.

    Args:
        layer: a reference layer (or :class:`Sequential`).
        x: input; checked when floating point (integer inputs such as labels or ids are not).
        *args: extra positional arguments for ``forward`` (e.g. labels).
        training: passed to ``forward``.
        eps: finite-difference step.
        atol, rtol: tolerance, as above.
        seed: seed of the random output weights ``dout``.
    """
    errors = gradient_errors(layer, x, *args, training=training, eps=eps, seed=seed)
    keys = [k for k in errors if not k.endswith(":scale")]
    return all(errors[k] <= atol + rtol * errors[f"{k}:scale"] for k in keys)
