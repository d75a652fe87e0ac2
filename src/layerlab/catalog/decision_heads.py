"""Built-in decision heads of the staged regimes (paper 001 ch. 6, Sec. 6.2.2; implementations:
layerlab.nets.decision)."""

from __future__ import annotations

from layerlab.core.config import ConfigError
from layerlab.core.registry import DECISION_HEADS, MODELS, register_head


def check_decision_block(cell: dict) -> None:
    """Down-convs need conv feature maps at the top of some stage that gets a fresh head (every stage but the last,
    which uses the model's output layer)."""
    model = MODELS[cell["model"]]
    conv_layers = model.conv_layers(cell)
    if min(conv_layers, model.hidden_layers(cell) - 1) < cell["segment_size"]:
        raise ConfigError(f"layer_head 'decision_block' puts down-convs on conv feature maps, but no stage of model "
                          f"'{cell['model']}' ({conv_layers} conv layers, {model.hidden_layers(cell)} hidden layers, "
                          f"segment_size {cell['segment_size']}) ends on one under a fresh head (the last stage uses "
                          f"the model's output layer); use layer_head 'linear'")


def check_head(cell: dict) -> None:
    """The staged cell's `layer_head`: its own constraints; `memory_target` needs a head with a search space."""
    spec = DECISION_HEADS[cell["layer_head"]]
    if cell["memory_target"] is not None and spec.search_space is None:
        searchable = " or ".join(f"'{s.name}'" for s in DECISION_HEADS.values() if s.search_space is not None)
        raise ConfigError(f"memory_target searches the configurations of the decision head; layer_head "
                          f"'{cell['layer_head']}' has none (use layer_head {searchable})")
    if spec.check:
        spec.check(cell)


register_head("linear", "layerlab.nets.decision:linear_head")
register_head("pool_linear", "layerlab.nets.decision:pool_linear_head")
register_head("decision_block", "layerlab.nets.decision:decision_block",
              search_space="layerlab.nets.decision:search_space", check=check_decision_block)
