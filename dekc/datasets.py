"""Regression data sets for the kernel ridge regression benchmark (experiments/uci_benchmark.py).

``load_uci(name)`` returns ``(X, y)`` as float64 numpy arrays, raw (not standardised):

==================  ===========  ==========================================================
name                shape of X   target ``y``
==================  ===========  ==========================================================
``yacht``           308 × 6      residuary resistance per unit weight of displacement
``diabetes``        442 × 10     disease progression one year after baseline
``energy_heating``  768 × 8      heating load (Y1)
``energy_cooling``  768 × 8      cooling load (Y2); same inputs as ``energy_heating``
``concrete``        1030 × 8     compressive strength (MPa)
``wine``            1599 × 11    quality score of red wine (0–10)
==================  ===========  ==========================================================

The UCI files are bundled in ``dekc/data/uci/`` with their read-me files; ``diabetes`` comes
from scikit-learn (``sklearn.datasets.load_diabetes``, raw, unscaled features). Cite the data
as ``citation(name)`` says (the texts are also in ``dekc/data/uci/CITATION.md``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .errors import DataFileError, InputError

__all__ = ["UCI_DATASETS", "citation", "load_uci"]

DATA_DIR = Path(__file__).parent / "data" / "uci"

UCI_DATASETS = ("yacht", "diabetes", "energy_heating", "energy_cooling", "concrete", "wine")

_SHAPES = {
    "yacht": (308, 6),
    "diabetes": (442, 10),
    "energy_heating": (768, 8),
    "energy_cooling": (768, 8),
    "concrete": (1030, 8),
    "wine": (1599, 11),
}

_CITATIONS = {
    "yacht": (
        "Yacht Hydrodynamics, UCI Machine Learning Repository (Ship Hydromechanics Laboratory, "
        "Delft University of Technology; donated by R. Lopez). "
        "J. Gerritsma, R. Onnink and A. Versluis. Geometry, resistance and stability of the Delft "
        "systematic yacht hull series. International Shipbuilding Progress, 28:276-297, 1981. "
        "I. Ortigosa, R. Lopez and J. Garcia. A neural networks approach to residuary resistance of "
        "sailing yachts prediction. Proceedings of the International Conference on Marine "
        "Engineering MARINE 2007, 2007."
    ),
    "diabetes": (
        "Diabetes data (scikit-learn's load_diabetes). B. Efron, T. Hastie, I. Johnstone and "
        "R. Tibshirani. Least angle regression. Annals of Statistics, 32(2):407-499, 2004."
    ),
    "energy": (
        "Energy Efficiency, UCI Machine Learning Repository (created by A. Xifara, processed by "
        "A. Tsanas). A. Tsanas and A. Xifara. Accurate quantitative estimation of energy performance "
        "of residential buildings using statistical machine learning tools. Energy and Buildings, "
        "49:560-567, 2012."
    ),
    "concrete": (
        "Concrete Compressive Strength, UCI Machine Learning Repository. Copyright Prof. I-Cheng Yeh "
        "(reuse unlimited with retention of this copyright notice). I-Cheng Yeh. Modeling of strength "
        "of high performance concrete using artificial neural networks. Cement and Concrete Research, "
        "28(12):1797-1808, 1998."
    ),
    "wine": (
        "Wine Quality (red), UCI Machine Learning Repository. P. Cortez, A. Cerdeira, F. Almeida, "
        "T. Matos and J. Reis. Modeling wine preferences by data mining from physicochemical "
        "properties. Decision Support Systems, 47(4):547-553, 2009. doi:10.1016/j.dss.2009.05.016"
    ),
}


def _check_name(name) -> str:
    if not isinstance(name, str) or name not in UCI_DATASETS:
        raise InputError(f"unknown data set {name!r}; choose one of {', '.join(UCI_DATASETS)}")
    return name


def citation(name: str) -> str:
    """How to cite data set ``name`` (the reference its read-me file asks for)."""
    name = _check_name(name)
    return _CITATIONS["energy" if name.startswith("energy_") else name]


def _read_csv(path: Path, delimiter: str) -> np.ndarray:
    """Numeric rows of a delimited text file with one header line (blank lines skipped)."""
    with open(path, newline="", encoding="ascii") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter))[1:]
    return np.array([[float(v) for v in row] for row in rows if any(v.strip() for v in row)], dtype=np.float64)


def load_uci(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of data set ``name`` (one of :data:`UCI_DATASETS`), float64, unstandardised.

    Shapes: yacht 308×6, diabetes 442×10, energy_heating and energy_cooling 768×8 (the same
    inputs), concrete 1030×8, wine (red wine quality) 1599×11; ``y`` has one entry per row.
    Raises ``ValueError`` naming the valid choices for any other name.
    """
    name = _check_name(name)
    if name == "diabetes":
        try:
            from sklearn.datasets import load_diabetes
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(
                "the diabetes data set comes from scikit-learn, an optional dependency: pip install 'dekc[sklearn]'"
            ) from exc

        X, y = load_diabetes(return_X_y=True, scaled=False)
        data = np.column_stack([X, y])
    elif name == "yacht":
        data = np.loadtxt(DATA_DIR / "yacht.txt", dtype=np.float64)
    elif name.startswith("energy_"):
        table = _read_csv(DATA_DIR / "energy.csv", ",")
        data = np.column_stack([table[:, :8], table[:, 8 if name == "energy_heating" else 9]])
    elif name == "concrete":
        data = _read_csv(DATA_DIR / "concrete.csv", ",")
    else:  # wine
        data = _read_csv(DATA_DIR / "winequality-red.csv", ";")
    X = np.ascontiguousarray(data[:, :-1], dtype=np.float64)
    y = np.ascontiguousarray(data[:, -1], dtype=np.float64)
    if X.shape != _SHAPES[name] or not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise DataFileError(
            f"data set {name!r}: expected a finite {_SHAPES[name][0]}×{_SHAPES[name][1]} "
            f"input matrix, read {X.shape} from {DATA_DIR}"
        )
    return X, y
