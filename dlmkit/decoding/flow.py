"""Rectified flow (Liu et al.; the straight-path flow matching CLSD's stage A uses).

Path from noise (t = 0) to data (t = 1):   x_t = (1 - t) * noise + t * target
Velocity along it:                          v   = target - noise
Stage A regresses a network v(x_t, t) onto it with the mean squared error; sampling
integrates dx/dt = v(x, t) from t = 0 to 1 with K Euler steps.
"""

from __future__ import annotations

from typing import Callable

import torch


def interpolate(noise: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.reshape(-1, *([1] * (target.ndim - 1))).to(target.dtype)
    return (1 - t) * noise + t * target


def velocity_target(noise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return target - noise


def rectified_flow_loss(velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], target: torch.Tensor,
                        noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean over every element of (v(x_t, t) - (target - noise))^2; t has one value per row."""
    predicted = velocity_fn(interpolate(noise, target, t), t)
    return (predicted.float() - velocity_target(noise, target).float()).pow(2).mean()


def euler_sample(velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """x_1 from x_0 = noise in `steps` Euler steps of size 1/steps at t = 0, 1/steps, ...
    Differentiable (stage C backpropagates through it)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = noise
    dt = 1.0 / steps
    for k in range(steps):
        t = torch.full((noise.shape[0],), k * dt, device=noise.device)
        x = x + dt * velocity_fn(x, t)
    return x
