"""A dataset plug-in from outside the package (docs/PLUGINS.md): 4 x 4 grey images of three classes, scikit-learn's
make_classification with 16 features quantized to 0..255, split 480/120 (stratified)."""

import numpy as np

from layerlab.core.registry import register_dataset


def synthetic_images(spec, downloads):
    """The arrays of `spec` (its splits and classes, as declared below); `downloads` is not needed."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=sum(spec.splits), n_features=16, n_informative=8, n_classes=spec.classes,
                               random_state=0)
    x = np.round(255 * (x - x.min()) / (x.max() - x.min())).astype(np.uint8).reshape(-1, *spec.shape)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=spec.splits[1], random_state=0, stratify=y)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, {}


register_dataset(
    "synthetic_images", synthetic_images, shape=(1, 4, 4), classes=3, splits=(480, 120),
    provenance={"source": "generated: sklearn.datasets.make_classification(n_features=16, n_informative=8, "
                          "random_state=0), min-max scaled to 0..255, as 4 x 4 images",
                "license": "public domain (generated)",
                "split": "stratified 480/120, sklearn train_test_split(random_state=0)", "scale": 255.0},
)
