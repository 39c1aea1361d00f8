"""FER-2013 read out from a connectome reservoir: pixels in, a linear classifier on the final state.

The input is the pixels, not a trained or random conv front end: each image (48 x 48) is
standardised on its own (zero mean, unit variance over its pixels; a blank image stays 0) and
projected by a fixed seeded Gaussian matrix ``P`` (``n_in x 2304``, entries ``N(0, scale^2 /
2304)``, so each input unit's drive has s.d. about ``scale``) onto the input populations. The
image is held as a constant input for ``steps`` steps from ``x(0) = 0``
(:meth:`graphnet.reservoir.Reservoir.run_constant`) and the readout populations' final state is
the feature vector. A linear classifier (scikit-learn's ``RidgeClassifierCV`` on standardised
features, its penalty chosen by efficient leave-one-out cross-validation on Training alone) is
trained on Training and scored on PublicTest; nothing is selected on PublicTest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphnet.reservoir import Reservoir

#: penalties RidgeClassifierCV chooses from (on standardised features)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 5, 10))


def standardize_images(images: np.ndarray) -> np.ndarray:
    """``(N, 48, 48)`` uint8 -> ``(N, 2304)`` float32, each image zero-mean, unit-variance."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    x = x - x.mean(1, keepdims=True)
    sd = x.std(1, keepdims=True)
    return x / np.where(sd > 0, sd, 1.0)


def pixel_projection(n_input_units: int, n_pixels: int, scale: float, seed: int) -> np.ndarray:
    """``(n_input_units, n_pixels)`` fixed Gaussian projection, entries ``N(0, scale^2 / n_pixels)``."""
    if not scale > 0:
        raise ValueError(f"FER input scale must be > 0, got {scale}")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_input_units, n_pixels)) * (scale / np.sqrt(n_pixels))


def reservoir_features(reservoir: Reservoir, images: np.ndarray, projection: np.ndarray,
                       steps: int, batch_size: int = 512, progress: bool = False,
                       desc: str = "images") -> np.ndarray:
    """``(N, n_readout)`` final readout states for ``images`` ``(N, 48, 48)``, in batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.empty((len(images), reservoir.n_readout), dtype=np.float32)
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, leave=False)
    for s in starts:
        x = standardize_images(images[s:s + batch_size])
        out[s:s + len(x)] = reservoir.run_constant(x, projection, steps)
    return out


@dataclass
class ReadoutResult:
    accuracy: float          # PublicTest accuracy, 0..1
    train_accuracy: float
    alpha: float             # penalty chosen on Training
    predictions: np.ndarray  # (N_test,) predicted class per PublicTest image
    n_train: int
    n_test: int


def fit_readout(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                alphas: Sequence[float] = DEFAULT_ALPHAS) -> ReadoutResult:
    """A ridge classifier on standardised features (scaler and penalty from the training set)."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=tuple(alphas)))
    model.fit(train_x.astype(np.float64), train_y)
    pred = model.predict(test_x.astype(np.float64))
    return ReadoutResult(accuracy=float((pred == test_y).mean()),
                         train_accuracy=float(model.score(train_x.astype(np.float64), train_y)),
                         alpha=float(model[-1].alpha_), predictions=pred.astype(np.int8),
                         n_train=len(train_y), n_test=len(test_y))


def fer_readout(reservoir: Reservoir, train: tuple[np.ndarray, np.ndarray],
                test: tuple[np.ndarray, np.ndarray], *, steps: int = 20, input_scale: float = 1.0,
                seed: int = 0, batch_size: int = 512, alphas: Sequence[float] = DEFAULT_ALPHAS,
                progress: bool = False) -> ReadoutResult:
    """Train a readout of ``reservoir`` on ``train`` (images, labels) and score it on ``test``."""
    proj = pixel_projection(reservoir.n_inputs_units, train[0][0].size, input_scale, seed)
    ftr = reservoir_features(reservoir, train[0], proj, steps, batch_size, progress, "Training")
    fte = reservoir_features(reservoir, test[0], proj, steps, batch_size, progress, "PublicTest")
    return fit_readout(ftr, np.asarray(train[1]), fte, np.asarray(test[1]), alphas)


def pixel_baseline(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   alphas: Sequence[float] = DEFAULT_ALPHAS) -> ReadoutResult:
    """The same classifier on the standardised pixels themselves (2304 features): what a linear
    readout gets without any reservoir."""
    return fit_readout(standardize_images(train[0]), np.asarray(train[1]),
                       standardize_images(test[0]), np.asarray(test[1]), alphas)
