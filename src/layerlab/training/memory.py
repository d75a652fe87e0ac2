"""Peak training memory of one optimizer step (paper 001, Ch. 6: "relative memory" of layer-wise training).

Two measurements of the same step (forward, cross-entropy, backward, optimizer step), on a copy of the network so
the run it describes is untouched (global RNG state restored, batch = the first `batch_size` training rows):

- `tracked` (every device, deterministic): the bytes a step must hold at its peak, i.e. right after the backward
  pass and the optimizer's first update: the tensors autograd saves for backward
  (`torch.autograd.graph.saved_tensors_hooks`, deduplicated by storage, minus storages already counted as
  parameters or batch), the resident parameters and buffers (the frozen feednet included, layers that the regime
  does not need excluded), the gradients and optimizer state of the trainable parameters, and the input batch.
  Transient tensors that are freed before backward (e.g. feednet activations under `no_grad`) and allocator
  overhead are not counted (seed-001 notes, E6b: "the CPU proxy ignores workspace and allocator overhead").
- `cuda` (CUDA only, else NaN): `torch.cuda.max_memory_allocated()` during the step minus `memory_allocated()`
  before it, with the copy of the network created inside the window, so the dataset and the original model
  that stay resident are excluded.

A regime that keeps more resident than the stage's network (round robin: every other layer with its decision head
and its optimizer state, `Regime.resident`) has those bytes added to both (`StepMemory.plus`, `stage_memory`).
Every tracked part is affine in the batch size (activations and the batch scale with it; parameters, gradients,
optimizer state and the loss's scalars do not), so `extrapolated_step_memory` gets the tracked bytes of a full
batch exactly from two steps on 2 and 4 of its rows: the cheap dry measurement of
the head search (`layerlab.training.head_search`).
Staged cells also measure the backprop step of the whole network on the same batch: `relative_memory`, the thesis's
"relative memory use" (Table 6.3: peak over stages / backprop).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from layerlab.training.stage import Stage

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (net, x, y) -> the step's loss


def ce_step_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one step of `net` (the step a memory measurement replays)."""
    return F.cross_entropy(net(x)[0], y)


PARTS = ("activations", "parameters", "gradients", "optimizer_state", "batch")


@dataclass(frozen=True)
class StepMemory:
    """Bytes per part of one training step (tracked), and the CUDA allocator's peak (NaN off CUDA)."""

    activations: int
    parameters: int
    gradients: int
    optimizer_state: int
    batch: int
    cuda: float = float("nan")

    @property
    def total(self) -> int:
        return sum(self.parts())

    def parts(self) -> list[int]:
        return [getattr(self, p) for p in PARTS]

    def plus(self, held: dict[str, int]) -> StepMemory:
        """This step's memory with `held` bytes per part resident beside it (counted in the CUDA peak too: the
        held tensors are allocated before the step, where the step's own copy is made inside the window)."""
        if not held:
            return self
        unknown = set(held) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown memory parts {sorted(unknown)}; known: {', '.join(PARTS)}")
        return dataclasses.replace(self, **{p: getattr(self, p) + held.get(p, 0) for p in PARTS},
                                   cuda=self.cuda + sum(held.values()))


def _key(t: torch.Tensor) -> tuple[str, int]:
    return str(t.device), t.untyped_storage().data_ptr()


def storage_bytes(tensors: Iterable[torch.Tensor], exclude: set[tuple[str, int]] | None = None) -> int:
    """Bytes of the distinct storages behind `tensors` (views share one), skipping those in `exclude`."""
    seen = dict.fromkeys(exclude or ())
    total = 0
    for t in tensors:
        if (key := _key(t)) not in seen:
            seen[key] = None
            total += t.untyped_storage().nbytes()
    return total


class SavedTensors:
    """Context manager that records every tensor autograd saves for backward (without changing it)."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.tensors.append(t)
        return t

    def __enter__(self) -> SavedTensors:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def own_buffers(net: nn.Module) -> nn.Module:
    """`net` with every buffer that is a view into a larger storage copied into one of its own (a packed cell's
    BatchNorm statistics are views of its pack's: a step of the cell alone holds only its own). A deep copy already
    gives parameters their own storage, but keeps a buffer's view of the whole storage."""
    copies: dict[int, torch.Tensor] = {}
    for module in net.modules():
        for name, buf in module._buffers.items():
            if buf is not None and buf.untyped_storage().nbytes() > buf.nbytes:
                module._buffers[name] = copies.setdefault(id(buf), buf.clone())
    return net


def step_memory(net: nn.Module, loss_fn: LossFn,
                make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
                x: torch.Tensor, y: torch.Tensor) -> StepMemory:
    """Memory of one step of training `net` (a module holding exactly the resident layers; parameters with
    `requires_grad` are the trained ones) on the batch (x, y); `loss_fn(net, x, y)` runs the forward pass."""
    cuda = x.device.type == "cuda"
    devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        if cuda:
            torch.cuda.synchronize(x.device)
            torch.cuda.reset_peak_memory_stats(x.device)
            before = torch.cuda.memory_allocated(x.device)
        net = own_buffers(copy.deepcopy(net))
        trainable = [p for p in net.parameters() if p.requires_grad]
        optimizer = make_optimizer(trainable)
        with SavedTensors() as saved:
            loss = loss_fn(net, x, y)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(x.device)
            peak = float(torch.cuda.max_memory_allocated(x.device) - before)
        resident = [*net.parameters(), *net.buffers()]
        counted = {_key(t) for t in [*resident, x, y]}
        state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        memory = StepMemory(
            activations=storage_bytes(saved.tensors, exclude=counted),
            parameters=storage_bytes(resident),
            gradients=storage_bytes(p.grad for p in trainable if p.grad is not None),
            optimizer_state=storage_bytes(state),
            batch=storage_bytes([x, y]),
            cuda=peak if cuda else float("nan"),
        )
        del net, optimizer, loss, saved
    return memory


def extrapolated_step_memory(net: nn.Module,
                             loss_fn: LossFn,
                             make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
                             x: torch.Tensor, y: torch.Tensor, small: tuple[int, int] = (2, 4)) -> StepMemory:
    """The tracked part of `step_memory(net, loss_fn, make_optimizer, x, y)` from steps on the first `small` rows
    (each part affine in the batch size: exact, integer arithmetic); CUDA peak NaN."""
    n, (a, b) = len(y), small
    if n <= b:
        return StepMemory(*step_memory(net, loss_fn, make_optimizer, x, y).parts())
    low, high = (step_memory(net, loss_fn, make_optimizer, x[:k].clone(), y[:k].clone()).parts() for k in small)
    return StepMemory(*(p + (q - p) * (n - a) // (b - a) for p, q in zip(low, high, strict=True)))


def as_arrays(memories: list[StepMemory]) -> dict[str, np.ndarray]:
    """Totals, CUDA peaks and parts (row per step measured) as float64 arrays."""
    return {"tracked": np.array([m.total for m in memories], dtype=np.float64),
            "cuda": np.array([m.cuda for m in memories], dtype=np.float64),
            "parts": np.array([m.parts() for m in memories], dtype=np.float64).reshape(len(memories), len(PARTS))}


def memory_variables(memories: list[StepMemory], layers: list[int] | None = None,
                     n_layers: int = 0) -> dict[str, xr.DataArray]:
    """Cell-level peak (max over stages) with its parts, and per-layer peaks when `layers` (a stage's top layer)."""
    arrays = as_arrays(memories)
    peak = int(np.argmax(arrays["tracked"]))
    out = {"peak_memory_bytes": xr.DataArray(arrays["tracked"][peak]),
           "cuda_peak_memory_bytes": xr.DataArray(np.nanmax(arrays["cuda"]) if np.isfinite(arrays["cuda"]).any()
                                                  else np.nan),
           "peak_memory_parts": xr.DataArray(arrays["parts"][peak], dims="memory_part",
                                             coords={"memory_part": np.array(PARTS, dtype=object)})}
    if layers is not None:
        for name, values in (("layer_peak_memory_bytes", arrays["tracked"]),
                             ("layer_cuda_peak_memory_bytes", arrays["cuda"])):
            per_layer = np.full(n_layers, np.nan)
            per_layer[layers] = values
            out[name] = xr.DataArray(per_layer, dims="layer", coords={"layer": np.arange(n_layers)})
    return out


def optimizer_state_bytes(make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
                          params: list[nn.Parameter]) -> int:
    """Bytes of the state `make_optimizer` keeps for `params` once it has updated them (momentum buffers, Adam's
    moments and step counters): measured on one step of stand-ins of their shapes, device and dtype."""
    standins = [nn.Parameter(torch.zeros_like(p)) for p in params]
    for p in standins:
        p.grad = torch.zeros_like(p)
    optimizer = make_optimizer(standins)
    optimizer.step()
    return storage_bytes(v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor))


def first_batch(batch_size: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the training batch size (own storage) for the memory measurement: only shapes matter."""
    n = min(batch_size, len(y))
    return x[:n].clone(), y[:n].clone()


def stage_memory(stage: Stage, x: torch.Tensor, y: torch.Tensor) -> StepMemory:
    """Memory of one step of `stage` on (x, y), with what its regime keeps resident beside it."""
    regime = stage.regime
    return step_memory(stage.net, regime.step_loss(stage), regime.step_optimizer(stage), x, y).plus(
        regime.resident(stage))
