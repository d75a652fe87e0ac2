"""Built-in training probes: what switches each on, the regimes it runs in and the variables it writes to train.zarr
(implementations: layerlab.probes.*). Registration order is the order in which their hooks run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from layerlab.catalog.measurements import REPRESENTATION, REPRESENTATION_PER_LAYER, check_representation
from layerlab.catalog.models import ResNetParams
from layerlab.core.config import ConfigError
from layerlab.core.params import Section, param
from layerlab.core.registry import register_probe

if TYPE_CHECKING:
    from layerlab.core.cell import Cell

BATCH_ENTROPY = {"batch_entropy": ("batch entropy H^l of each hidden layer's activations", "nat")}
BN_PARAMETERS = {
    "gamma": ("BatchNorm scale gamma per channel (learnable only; NaN: padding)", "1"),
    "beta": ("BatchNorm shift beta per channel (learnable only; NaN: padding)", "1"),
    "gamma_activity": ("activity of gamma: mean over channels of |gamma - 1|", "1"),
    "beta_activity": ("activity of beta: mean over channels of |beta|", "1"),
}
GRAD_RMS = {"grad_rms": ("RMS of dL/dW of the layer's weight (training mini-batch)", "1")}
WEIGHT_ENTROPY = {
    "weight_entropy": ("weight entropy H_N (2^N min-max bins)", "bit"),
    "huffman_bits": ("Huffman bits per weight (2^N min-max bins)", "bit/weight"),
}
WEIGHT_COMPRESSION = {
    "sent_bits": ("bits per weight N of the last compression", "bit/weight"),
    "sent_huffman_bits": ("Huffman bits per weight of the last compression", "bit/weight"),
}
CURVATURE = {
    "eig_x": ("eigenvalues of the layer-input second moment Sigma_x, descending (NaN: padding)", "1"),
    "eig_g": ("eigenvalues of the output-gradient second moment Sigma_grad, descending (NaN: padding)", "1"),
    "lmax_x": ("lambda_max(Sigma_x)", "1"),
    "lmax_g": ("lambda_max(Sigma_grad)", "1"),
    "lmax_kron": ("lambda_max(Sigma_x kron Sigma_grad) (Prop. 1: product)", "1"),
    "kappa_x": ("general condition number kappa_p(Sigma_x)", "1"),
    "kappa_g": ("general condition number kappa_p(Sigma_grad)", "1"),
    "kappa_kron": ("general condition number kappa_p(Sigma_x kron Sigma_grad)", "1"),
    "kappa_nz_x": ("lambda_max / smallest non-zero eigenvalue of Sigma_x", "1"),
    "kappa_nz_g": ("lambda_max / smallest non-zero eigenvalue of Sigma_grad", "1"),
    "kappa_nz_kron": ("lambda_max / smallest non-zero eigenvalue of Sigma_x kron Sigma_grad", "1"),
    "log10_kappa_x": ("log10 kappa_p(Sigma_x) (inf, numerically singular, shown as 12)", "1"),
    "log10_kappa_g": ("log10 kappa_p(Sigma_grad) (inf, numerically singular, shown as 12)", "1"),
    "log10_kappa_kron": ("log10 kappa_p(Sigma_x kron Sigma_grad) (inf, numerically singular, shown as 12)", "1"),
    "log10_lmax_x": ("log10 lambda_max(Sigma_x)", "1"),
    "log10_lmax_g": ("log10 lambda_max(Sigma_grad)", "1"),
    "log10_lmax_kron": ("log10 lambda_max(Sigma_x kron Sigma_grad)", "1"),
    "domination": ("sigma_max(dL/dW) / sigma_max(W) (Definition 1: weight domination when << 1)", "1"),
    "log10_domination": ("log10 sigma_max(dL/dW) / sigma_max(W)", "1"),
    "weight_norm": ("Frobenius norm of the layer's weight", "1"),
    "lmax_wgrad": ("lambda_max of the exact per-example weight-gradient second moment (output layer only)", "1"),
    "last_lmax_x": ("output layer: lambda_max(Sigma_x) of its input", "1"),
    "last_lmax_g": ("output layer: lambda_max(Sigma_grad)", "1"),
    "last_lmax_kron": ("output layer: lambda_max(Sigma_x) lambda_max(Sigma_grad) (Prop. 1)", "1"),
    "last_lmax_wgrad": ("output layer: lambda_max of the per-example weight-gradient second moment", "1"),
    "last_weight_norm": ("output layer: Frobenius norm of the weight", "1"),
    "log10_kappa90_x_init": ("mean over layers of log10 kappa_90%(Sigma_x) (inf as 1e12), step 0", "1"),
    "log10_kappa90_x_final": ("mean over layers of log10 kappa_90%(Sigma_x) at the last measurement", "1"),
    "log10_kappa90_g_init": ("mean over layers of log10 kappa_90%(Sigma_grad) (inf as 1e12), step 0", "1"),
    "log10_kappa90_g_final": ("mean over layers of log10 kappa_90%(Sigma_grad) at the last measurement", "1"),
    "singular90_x_init": ("fraction of layers whose Sigma_x is numerically singular at 90 % (kappa_90% inf), step 0",
                          "1"),
    "singular90_x_final": ("fraction of layers whose Sigma_x has kappa_90% = inf, last measurement", "1"),
    "singular90_g_init": ("fraction of layers whose Sigma_grad has kappa_90% = inf, step 0", "1"),
    "singular90_g_final": ("fraction of layers whose Sigma_grad has kappa_90% = inf, last measurement", "1"),
    "curvature_seconds": ("wall time of all curvature measurements (part of train_seconds)", "s"),
}
NEURON_STATES = {
    "n_dying": ("dying units: output 0 for every example of the probe set (the training split)", "1"),
    "n_full": ("full units: output > 0 for every example of the probe set (the training split)", "1"),
}
MEMORY = {
    "peak_memory_bytes": ("peak memory of one training step (tracked: saved activations + parameters + gradients "
                          "+ optimizer state + batch; layer-wise: max over stages; round robin: with every other "
                          "layer's resident head and optimizer state)", "B"),
    "cuda_peak_memory_bytes": ("CUDA allocator peak of one training step above the resident data (NaN off CUDA)",
                               "B"),
    "peak_memory_parts": ("parts of the tracked peak memory", "B"),
    "layer_peak_memory_bytes": ("tracked peak memory of one step of the stage whose window ends at this layer", "B"),
    "layer_cuda_peak_memory_bytes": ("CUDA allocator peak of one step of the stage ending at this layer", "B"),
    "backprop_memory_bytes": ("tracked peak memory of one backprop step of the whole network (same batch)", "B"),
    "relative_memory": ("peak_memory_bytes / backprop_memory_bytes (thesis Table 6.3's relative memory use)", "1"),
}
DYNAMIC = "_dynamic"  # suffix of the representation measures taken during training (train.zarr)
REPRESENTATION_DYNAMIC = {
    **{f"{name}{DYNAMIC}": (f"{REPRESENTATION[name][0]}, during training", REPRESENTATION[name][1])
       for name in REPRESENTATION_PER_LAYER},
    f"representation{DYNAMIC}_seconds": ("wall time of the representation measures during training (part of "
                                         "train_seconds)", "s"),
}


@dataclass(frozen=True)
class GradRMSParams(Section):
    """grad_rms's switch."""

    grad_rms_probe: bool = param(
        False, "record grad_rms (step, layer): RMS of dL/dW of every layer's weight, output layer last, from the "
        "training step's own backward (NaN at the last step: no update there)", per_model=True)


@dataclass(frozen=True)
class WeightEntropyParams(Section):
    """weight_entropy's switch and bins."""

    weight_entropy_bits: int = param(
        0, "N > 0: record weight_entropy and huffman_bits (step, layer) of every layer's weight after min-max binning "
        "into 2^N bins (thesis: M = 4); 0: off", per_model=True, minimum=0, maximum=16)


@dataclass(frozen=True)
class CompressionParams(Section):
    """weight_compression's schedule and bits."""

    quantize_bits: int = param(
        0, "ch. 3 compression: every quantize_every steps each layer's weight and bias become the centres of 2^N "
        "min-max bins (W <- Decompress(Compress(W))); 0: off", per_model=True, minimum=0, maximum=24)
    quantize_every: int = param(1, "steps between weight compressions", per_model=True, minimum=1)
    quantize_floor: float | None = param(
        None, "the thesis's dynamic bit rule: N = ceil(H_M + floor) per layer and compression, capped at quantize_bits"
        " (the ceiling), H_M the weight entropy at M = weight_entropy_bits; null: fixed N", per_model=True, minimum=0)


@dataclass(frozen=True)
class CurvatureParams(Section):
    """curvature's schedule and probe batch."""

    curvature_every: int = param(
        0, "steps between K-FAC factor measurements (and the last step); 0: off. A multiple of log_every keeps the "
        "step axis shared with the other per-step metrics", per_model=True, minimum=0)
    curvature_samples: int = param(
        1024, "first N training examples, one batch (BN in training mode), for the factors", per_model=True, minimum=2)
    curvature_labels: Literal["empirical", "sampled"] = param(
        "empirical", "empirical: true labels (official code); sampled: y ~ model (the FIM's q(y|x))", per_model=True)


@dataclass(frozen=True)
class NeuronParams(Section):
    """neuron_states' schedule and probe rows."""

    neuron_every: int = param(
        0, "steps between counts of dying/full units per hidden layer (and the last); 0: off",
        per_model=True, minimum=0)
    neuron_samples: int = param(
        0, "first N training examples the units are counted on (BN in training mode); 0: all",
        per_model=True, minimum=0)


@dataclass(frozen=True)
class RepresentationDynamicParams(Section):
    """representation_dynamic's schedule (its measures: RepresentationParams)."""

    representation_every: int = param(
        0, "training probe representation_dynamic: every N steps (and the last) the same measures on the same probe "
        "subset, written to train.zarr as <measure>_dynamic (step, rep_layer); 0: off (see representation_at)",
        per_model=True, minimum=0)
    representation_at: tuple[int, ...] = param(
        (), "more steps (<= steps) at which the training probe measures, e.g. [0, 468, 1404] (epochs 0, 1, 3); with "
        "representation_every 0 these steps only", per_model=True, items={"minimum": 0})


def representation_schedule(params: RepresentationDynamicParams, steps: int) -> set[int]:
    """The steps (of `steps`) at which the training probe `representation_dynamic` measures: every
    `representation_every` (and the last step), and `representation_at`."""
    every = params.representation_every
    return (set(range(0, steps, every)) | {steps} if every else set()) | set(params.representation_at)


def representation_dynamic_on(cell: Cell) -> bool:
    params = cell[RepresentationDynamicParams]
    return params.representation_every > 0 or bool(params.representation_at)


def check_representation_dynamic(cell: Cell) -> None:
    check_representation(cell)
    steps = cell.run.steps
    if late := sorted(s for s in cell[RepresentationDynamicParams].representation_at if s > steps):
        raise ConfigError(f"representation_at: steps {late} are after the last step ({steps})")


def check_compression(cell: Cell) -> None:
    compression = cell[CompressionParams]
    if compression.quantize_floor is not None and not (compression.quantize_bits
                                                       and cell[WeightEntropyParams].weight_entropy_bits):
        raise ConfigError("quantize_floor (dynamic bits) needs quantize_bits (the ceiling) and weight_entropy_bits "
                          "(M, the entropy estimate) > 0")


# paper 000: every hidden layer's batch entropy at the logged steps
register_probe("batch_entropy", "layerlab.probes.batch_entropy:BatchEntropyProbe", BATCH_ENTROPY, packs=True)
# paper 002: BatchNorm's learnable gamma/beta (networks without learnable ones write nothing)
register_probe("bn_parameters", "layerlab.probes.bn_params:BNParametersProbe", BN_PARAMETERS,
               enabled=lambda cell: cell.model.bn_variant in ("bn_gamma", "bn_beta", "bn_gamma_beta")
               or cell[ResNetParams].last_bn, keys=("bn_variant", "last_bn"), packs=True)
# paper 001 ch. 4: per-layer RMS of dL/dW from the training step's own backward
register_probe("grad_rms", "layerlab.probes.grad_rms:GradRMSProbe", GRAD_RMS,
               enabled=lambda cell: cell[GradRMSParams].grad_rms_probe, keys=("grad_rms_probe",), layer_maps=True,
               packs=True, parameters=GradRMSParams)
# paper 001 ch. 3: weight entropy and Huffman bits per weight
register_probe("weight_entropy", "layerlab.probes.weight_entropy:WeightEntropyProbe", WEIGHT_ENTROPY,
               enabled=lambda cell: cell[WeightEntropyParams].weight_entropy_bits > 0, keys=("weight_entropy_bits",),
               layer_maps=True, packs=True, parameters=WeightEntropyParams)
# paper 001 ch. 3: W <- Decompress(Compress(W)) during training, and the bits sent
register_probe("weight_compression", "layerlab.probes.weight_entropy:WeightCompressionProbe", WEIGHT_COMPRESSION,
               enabled=lambda cell: cell[CompressionParams].quantize_bits > 0, keys=("quantize_bits",),
               regimes=("backprop",), layer_maps=True, check=check_compression, packs=True,
               parameters=CompressionParams)
# paper 004: K-FAC factors of every layer's Fisher block, their spectra and condition numbers
register_probe("curvature", "layerlab.probes.curvature:CurvatureProbe", CURVATURE,
               enabled=lambda cell: cell[CurvatureParams].curvature_every > 0, keys=("curvature_every",),
               regimes=("backprop",), layer_maps=True, packs=True, parameters=CurvatureParams)
# paper 001 ch. 6: peak memory of one training step (per stage in the staged regimes)
register_probe("memory", "layerlab.probes.memory:MemoryProbe", MEMORY, packs=True)
# paper 004 Sec. 4.2, Fig. A12: dying and full ReLU units per hidden layer
register_probe("neuron_states", "layerlab.probes.neurons:NeuronStatesProbe", NEURON_STATES,
               enabled=lambda cell: cell[NeuronParams].neuron_every > 0, keys=("neuron_every",), regimes=("backprop",),
               packs=True, parameters=NeuronParams)
# paper 001 ch. 5: LSD, k-redundancy and selection entropy per representation at chosen steps of training
register_probe("representation_dynamic", "layerlab.probes.representation_dynamic:RepresentationDynamicProbe",
               REPRESENTATION_DYNAMIC, enabled=representation_dynamic_on,
               keys=("representation_every", "representation_at"), regimes=("backprop",),
               check=check_representation_dynamic, packs=True, parameters=RepresentationDynamicParams)
