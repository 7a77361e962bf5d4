"""Timestep samplers for diffusion training (Nichol & Dhariwal 2021, §3.3; openai/improved-diffusion
``improved_diffusion/resample.py``).

Sampling t non-uniformly and re-weighting each sample by 1 / (T p_t) keeps the loss an unbiased
estimate of the uniform-t objective while lowering its variance. IDDPM needs this to train on L_vlb
alone (``--schedule_sampler loss-second-moment``): p_t ~ sqrt(E[L_t^2]). The default is uniform.

All randomness comes from an explicit ``torch.Generator`` so runs are reproducible, and the sampler
state (loss history) is saved with checkpoints via ``state_dict``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["LossSecondMomentSampler", "ScheduleSampler", "UniformSampler", "build_sampler"]


class ScheduleSampler:
    """Draws t from a distribution over {0..T-1} given by ``weights()`` (unnormalised, float64)."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = int(num_timesteps)

    def weights(self) -> np.ndarray:
        raise NotImplementedError

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns (t [B] int64, importance weights [B] float32 = 1 / (T p_t)).

        Multiply each per-sample loss by its weight before averaging to keep the estimate unbiased.
        """
        w = self.weights()
        p = w / w.sum()  # [T] float64
        idx = torch.multinomial(torch.from_numpy(p), batch_size, replacement=True, generator=_cpu(generator))  # [B]
        importance = 1.0 / (self.num_timesteps * p[idx.numpy()])  # [B] float64
        t = idx.to(device) if device is not None else idx
        return t, torch.from_numpy(importance).float().to(t.device)

    def update_with_all_losses(self, ts: Sequence[int], losses: Sequence[float]) -> None:
        """Record the per-sample losses of all ranks (no-op for samplers that do not learn)."""

    def update_with_local_losses(self, local_ts: Tensor, local_losses: Tensor) -> None:
        """Gather (t, loss) pairs from every DDP rank, then ``update_with_all_losses``.

        Every rank must call this with its own batch (sizes may differ) so that all ranks hold the
        same history and hence draw from the same distribution.
        """
        ts = local_ts.detach().reshape(-1)
        losses = local_losses.detach().reshape(-1).to(torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            n = torch.tensor([ts.numel()], device=ts.device)
            sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
            dist.all_gather(sizes, n)
            max_n = int(max(int(s) for s in sizes))
            padded = torch.zeros(max_n, 2, dtype=torch.float64, device=ts.device)  # [max_n, (t, loss)]
            padded[: ts.numel(), 0] = ts.to(torch.float64)
            padded[: ts.numel(), 1] = losses.to(ts.device)
            gathered = [torch.zeros_like(padded) for _ in sizes]
            dist.all_gather(gathered, padded)
            rows = torch.cat([g[: int(s)] for g, s in zip(gathered, sizes)]).cpu()
            ts_all, losses_all = rows[:, 0].long().tolist(), rows[:, 1].tolist()
        else:
            ts_all, losses_all = ts.cpu().tolist(), losses.cpu().tolist()
        self.update_with_all_losses(ts_all, losses_all)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("timestep samplers draw on the CPU; pass a CPU torch.Generator")
    return generator


class UniformSampler(ScheduleSampler):
    """p_t = 1 / T; every importance weight is exactly 1."""

    def weights(self) -> np.ndarray:
        return np.ones(self.num_timesteps, dtype=np.float64)


class LossSecondMomentSampler(ScheduleSampler):
    """p_t proportional to sqrt(E[L_t^2]) over the last ``history_per_term`` losses of each t.

    Uniform until *every* t has a full history; afterwards the normalised weights are mixed with a
    ``uniform_prob`` share of the uniform distribution so that no t is ever starved.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        self._history = np.zeros((self.num_timesteps, self.history_per_term), dtype=np.float64)  # [T, H]
        self._counts = np.zeros(self.num_timesteps, dtype=np.int64)  # [T], saturates at H

    def warmed_up(self) -> bool:
        return bool((self._counts == self.history_per_term).all())

    def weights(self) -> np.ndarray:
        if not self.warmed_up():
            return np.ones(self.num_timesteps, dtype=np.float64)
        w = np.sqrt(np.mean(self._history**2, axis=-1))  # [T]
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update_with_all_losses(self, ts: Sequence[int], losses: Sequence[float]) -> None:
        """Append each loss to its t's FIFO history (the oldest entry drops out once it is full)."""
        for t, loss in zip(ts, losses):
            t = int(t)
            if self._counts[t] == self.history_per_term:
                self._history[t, :-1] = self._history[t, 1:]
                self._history[t, -1] = float(loss)
            else:
                self._history[t, self._counts[t]] = float(loss)
                self._counts[t] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"history": self._history.copy(), "counts": self._counts.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        history = np.asarray(state["history"], dtype=np.float64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        if history.shape != self._history.shape or counts.shape != self._counts.shape:
            raise ValueError("sampler state does not match num_timesteps / history_per_term")
        self._history, self._counts = history.copy(), counts.copy()


def build_sampler(name: str, num_timesteps: int, **kwargs: Any) -> ScheduleSampler:
    """``uniform`` or ``loss-second-moment`` (IDDPM's command-line names)."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentSampler(num_timesteps, **kwargs)
    raise ValueError(f"unknown schedule sampler {name!r}; use 'uniform' or 'loss-second-moment'")
