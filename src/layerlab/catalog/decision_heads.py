"""Built-in decision heads of the staged regimes (paper 001 ch. 6, Sec. 6.2.2; implementations:
layerlab.nets.decision)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerlab.core.config import ConfigError
from layerlab.core.params import Section, param
from layerlab.core.registry import DECISION_HEADS, MODELS, register_head

if TYPE_CHECKING:
    from layerlab.core.cell import Cell


@dataclass(frozen=True)
class DecisionBlockParams(Section):
    """decision_block's down-convs, channels and down-pool (with memory_target: the largest the search may use)."""

    decision_convs: int = param(
        1, "decision_block: 3x3 stride-2 pad-1 convs ('down-convs', the cell's activation) on the conv map, as many as"
        " fit (down to 1x1); with memory_target the most the search may use (the thesis's Max. DC)", minimum=0)
    decision_channels: int = param(
        64, "decision_block: output channels of every down-conv; with memory_target the most the search may use",
        minimum=1)
    decision_pool: int = param(
        0, "decision_block: 'down-pool', adaptive average pool of the last map to at most p x p before the Linear "
        "classifier; 0: none (flatten)", minimum=0)


def check_decision_block(cell: Cell) -> None:
    """Down-convs need conv feature maps at the top of some stage that gets a fresh head (every stage but the last,
    which uses the model's output layer)."""
    model = MODELS[cell.model.model]
    conv_layers, hidden, k = model.conv_layers(cell), model.hidden_layers(cell), cell.regime.segment_size
    if min(conv_layers, hidden - 1) < k:
        raise ConfigError(f"layer_head 'decision_block' puts down-convs on conv feature maps, but no stage of model "
                          f"'{cell.model.model}' ({conv_layers} conv layers, {hidden} hidden layers, segment_size "
                          f"{k}) ends on one under a fresh head (the last stage uses the model's output layer); use "
                          f"layer_head 'linear'")


def check_head(cell: Cell) -> None:
    """The staged cell's `layer_head`: its own constraints; `memory_target` needs a head with a search space."""
    spec = DECISION_HEADS[cell.regime.layer_head]
    if cell.regime.memory_target is not None and spec.search_space is None:
        searchable = " or ".join(f"'{s.name}'" for s in DECISION_HEADS.values() if s.search_space is not None)
        raise ConfigError(f"memory_target searches the configurations of the decision head; layer_head "
                          f"'{cell.regime.layer_head}' has none (use layer_head {searchable})")
    if spec.check:
        spec.check(cell)


register_head("linear", "layerlab.nets.decision:linear_head")
register_head("pool_linear", "layerlab.nets.decision:pool_linear_head")
register_head("decision_block", "layerlab.nets.decision:decision_block",
              search_space="layerlab.nets.decision:search_space", check=check_decision_block,
              parameters=DecisionBlockParams)
