"""Built-in datasets (sources: layerlab.data.sources). Each provenance is written beside the prepared arrays, in
the order given here."""

from __future__ import annotations

from layerlab.core.registry import register_dataset

SOURCES = "layerlab.data.sources"
TORCHVISION = {"source": "torchvision download", "scale": 255.0, "split": "official train/test"}
CIFAR_LICENSE = "MIT-style (Krizhevsky, Nair, Hinton)"

register_dataset("digits", f"{SOURCES}:digits", shape=(1, 8, 8), classes=10, splits=(1437, 360), provenance={
    "source": "sklearn.datasets.load_digits (UCI optdigits test set, bundled with scikit-learn)",
    "license": "CC BY 4.0 (UCI Machine Learning Repository)",
    "split": "stratified 80/20, sklearn train_test_split(random_state=0)", "scale": 16.0})
register_dataset("fashion_mnist", f"{SOURCES}:fashion_mnist", shape=(1, 28, 28), classes=10, splits=(60_000, 10_000),
                 provenance={"license": "MIT (Zalando Research)", "scale": 255.0, "split": "official 60k/10k",
                             "source": "torchvision download"}, options={"torchvision": "FashionMNIST"})
register_dataset("mnist", f"{SOURCES}:torchvision_download", shape=(1, 28, 28), classes=10, splits=(60_000, 10_000),
                 provenance={**TORCHVISION, "license": "CC BY-SA 3.0 (LeCun, Cortes, Burges)"},
                 options={"torchvision": "MNIST"})
register_dataset("cifar10", f"{SOURCES}:torchvision_download", shape=(3, 32, 32), classes=10, splits=(50_000, 10_000),
                 provenance={**TORCHVISION, "license": CIFAR_LICENSE}, options={"torchvision": "CIFAR10"})
register_dataset("cifar100", f"{SOURCES}:torchvision_download", shape=(3, 32, 32), classes=100,
                 splits=(50_000, 10_000), provenance={**TORCHVISION, "license": CIFAR_LICENSE},
                 options={"torchvision": "CIFAR100"})
# generated: a control without any structure to learn
register_dataset("white_noise", f"{SOURCES}:white_noise", shape=(1, 28, 28), classes=10, splits=(10_000, 2_000),
                 provenance={"source": "generated: uniform uint8 pixels and uniform labels, numpy default_rng(0)",
                             "license": "public domain (generated)", "scale": 255.0, "split": "10k/2k"})
