"""Solvers for flow-matching models, one short pure function each.

``denoiser(x, sigma) -> x0`` is the model turned into a clean-sample predictor (for a flow
model predicting velocity v: ``x0 = x - sigma * v``). Each solver walks ``sigmas`` from high to
low, calls ``callback(step, x, x0)`` after each model call, and returns the final sample.
In flow matching a sample at noise level sigma is ``(1 - sigma) * x0 + sigma * noise``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None] | None
NoiseSource = Callable[[], torch.Tensor]


def _half_log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma (inf at sigma 0)."""
    return math.inf if sigma == 0 else math.log((1 - sigma) / sigma)


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                 callback: Callback = None) -> torch.Tensor:
    """First-order: follow the predicted velocity straight to the next noise level."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoiser(x, sigma)
        if callback:
            callback(i, x, x0)
        velocity = (x - x0) / sigma
        x = x + (sigma_next - sigma) * velocity
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                    callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M): second order from the previous step's x0, first order at the ends."""
    previous_x0, previous_h = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoiser(x, sigma)
        if callback:
            callback(i, x, x0)
        if sigma_next == 0:
            x = x0
            break
        h = _half_log_snr(sigma_next) - _half_log_snr(sigma)
        if previous_x0 is None:
            blended = x0
        else:
            r = previous_h / h
            blended = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        x = (sigma_next / sigma) * x - (1 - sigma_next) * math.expm1(-h) * blended
        previous_x0, previous_h = x0, h
    return x


def _unipc_coefficients(h: float, rks: list[float], order: int) -> tuple[list[float], float, float]:
    """B(h)=expm1(-h) ("bh2") weights of UniPC in data-prediction form."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    rows, rhs = [], []
    for k in range(1, order + 1):
        rows.append([r ** (k - 1) for r in rks])
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return rows, rhs, h_phi_1


@torch.no_grad()
def sample_unipc(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                 callback: Callback = None, *, order: int = 2) -> torch.Tensor:
    """UniPC multistep predictor-corrector (Wan's default solver), order 2, "bh2" variant.

    Each step first corrects the sample the last predictor produced, using the model output
    just computed at it (UniC), then predicts the next one from the last ``order`` outputs
    (UniP). The order is lowered for the first step and near the end, as Wan does.
    """
    n = len(sigmas) - 1
    lambdas = [_half_log_snr(float(s)) for s in sigmas]
    history: list[torch.Tensor] = []       # x0 predictions, newest last
    last_sample, last_order = None, 1
    for i in range(n):
        sigma = float(sigmas[i])
        x0 = denoiser(x, sigma)
        if callback:
            callback(i, x, x0)
        if last_sample is not None:  # UniC: correct x using the output we just computed there
            x = _unic_update(last_sample, x0, history, lambdas, sigmas, i, last_order)
        history = (history + [x0])[-order:]
        this_order = min(order, n - i, len(history))
        last_sample, last_order = x, this_order
        x = _unip_update(x, history, lambdas, sigmas, i, this_order)
    return x


def _unip_update(x, history, lambdas, sigmas, i, order):
    sigma_s, sigma_t = float(sigmas[i]), float(sigmas[i + 1])
    m0 = history[-1]
    h = lambdas[i + 1] - lambdas[i]
    alpha_t = 1 - sigma_t
    if math.isinf(h):  # stepping to sigma 0 lands exactly on the prediction
        return m0.clone()
    rks, d1s = [], []
    for k in range(1, order):
        rk = (lambdas[i - k] - lambdas[i]) / h
        rks.append(rk)
        d1s.append((history[-(k + 1)] - m0) / rk)
    rows, rhs, h_phi_1 = _unipc_coefficients(h, rks + [1.0], order)
    x_next = (sigma_t / sigma_s) * x - alpha_t * h_phi_1 * m0
    if d1s:
        rhos = [0.5] if order == 2 else torch.linalg.solve(
            torch.tensor(rows[:-1])[:, :-1], torch.tensor(rhs[:-1])).tolist()
        correction = sum(r * d for r, d in zip(rhos, d1s))
        x_next = x_next - alpha_t * h_phi_1 * correction
    return x_next


def _unic_update(last_sample, model_t, history, lambdas, sigmas, i, order):
    sigma_s, sigma_t = float(sigmas[i - 1]), float(sigmas[i])
    m0 = history[-1]
    h = lambdas[i] - lambdas[i - 1]
    alpha_t = 1 - sigma_t
    rks, d1s = [], []
    for k in range(1, order):
        rk = (lambdas[i - 1 - k] - lambdas[i - 1]) / h
        rks.append(rk)
        d1s.append((history[-(k + 1)] - m0) / rk)
    rows, rhs, h_phi_1 = _unipc_coefficients(h, rks + [1.0], order)
    rhos = [0.5] if order == 1 else torch.linalg.solve(torch.tensor(rows),
                                                       torch.tensor(rhs)).tolist()
    x_t = (sigma_t / sigma_s) * last_sample - alpha_t * h_phi_1 * m0
    correction = sum(r * d for r, d in zip(rhos[:-1], d1s)) if d1s else 0
    return x_t - alpha_t * h_phi_1 * (correction + rhos[-1] * (model_t - m0))


@torch.no_grad()
def sample_flow_distilled(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                          callback: Callback = None, *, noise: NoiseSource) -> torch.Tensor:
    """Few-step sampler for step-distilled checkpoints (cfg 1, 4-8 steps).

    Each step jumps to the predicted clean sample and re-noises it with fresh noise to the next
    level, as consistency/LCM-style distillations are trained to do.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoiser(x, sigma)
        if callback:
            callback(i, x, x0)
        x = x0 if sigma_next == 0 else (1 - sigma_next) * x0 + sigma_next * noise()
    return x


SOLVERS = {
    "unipc": sample_unipc,
    "euler": sample_euler,
    "dpmpp_2m": sample_dpmpp_2m,
    "flow_distilled": sample_flow_distilled,
}
SOLVER_NAMES = tuple(SOLVERS)
