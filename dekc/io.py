"""Reading input matrices for the command line: CSV (or other delimited text) and ``.npy``.

:func:`read_inputs` returns a float64 array ``(n, p)``; anything it cannot read exactly raises
:class:`DataFileError` naming the file, the line and what to fix. Nothing is guessed silently: a
first line that is not numeric is taken as a header only when every one of its cells is
non-numeric, and empty cells, ``nan`` or ragged rows are errors.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import DataFileError


@contextlib.contextmanager
def atomic_output(path) -> Iterator[BinaryIO]:
    """A binary handle whose contents replace ``path`` only when the block succeeds: readers see
    the old file or the whole new one, and a failure (or an interruption) leaves ``path`` as it
    was and no temporary file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_delimiter(delimiter: str | None) -> str | None:
    """A single-character column delimiter (``\\t`` written out stands for a tab), or None."""
    if delimiter is None:
        return None
    if delimiter in ("\\t", "tab"):
        return "\t"
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
        raise DataFileError(f"the delimiter must be one character such as ',' ';' or '\\t' (a tab), got {delimiter!r}")
    return delimiter


def read_inputs(path, *, delimiter: str | None = None) -> np.ndarray:
    """The numeric matrix in ``path`` (``.npy``, or delimited text such as ``.csv``/``.tsv``/``.txt``).

    Text files: the delimiter is ``delimiter`` or, by default, a comma for ``.csv``, a tab for
    ``.tsv`` and runs of whitespace otherwise; a header line is skipped when none of its cells is
    a number. A vector (one column, or a 1-D ``.npy``) is read as ``n`` inputs of dimension 1.
    """
    path = Path(path)
    delimiter = check_delimiter(delimiter)
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    if path.is_dir():
        raise DataFileError(f"{path} is a directory; pass a .csv, .tsv, .txt or .npy file")
    if path.suffix.lower() == ".npy":
        X = _read_npy(path)
    else:
        X = _read_text(path, delimiter)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataFileError(f"{path}: expected a non-empty (n, p) matrix of inputs, got shape {X.shape}")
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        row, col = bad[0]
        raise DataFileError(
            f"{path}: row {row + 1}, column {col + 1} is {X[row, col]}; remove or impute non-finite values first"
        )
    return X


def _read_npy(path: Path) -> np.ndarray:
    try:
        X = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: never loaded
        raise DataFileError(f"{path}: not a numeric .npy array ({exc})") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read it as .npy ({exc})") from None
    if not isinstance(X, np.ndarray) or not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise DataFileError(f"{path}: expected a real numeric array, got dtype {getattr(X, 'dtype', type(X))}")
    return X.astype(np.float64)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_text(path: Path, delimiter: str | None) -> np.ndarray:
    if delimiter is None:
        delimiter = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not a text file (for binary arrays use .npy)") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if delimiter is None:
        rows = [(k, line.split()) for k, line in enumerate(text.splitlines(), 1)]
    else:
        rows = list(enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1))
    rows = [(k, [cell.strip() for cell in cells]) for k, cells in rows if any(cell.strip() for cell in cells)]
    if not rows:
        raise DataFileError(f"{path}: the file has no data rows")
    if all(_number(cell) is None for cell in rows[0][1]):
        rows = rows[1:]  # a header
        if not rows:
            raise DataFileError(f"{path}: the file has a header but no data rows")
    width = len(rows[0][1])
    values = []
    for line, cells in rows:
        if len(cells) != width:
            raise DataFileError(
                f"{path}, line {line}: {len(cells)} values where the first data row has {width}; "
                "every row needs the same number of columns"
            )
        row = []
        for col, cell in enumerate(cells, 1):
            value = _number(cell)
            if value is None or math.isnan(value):
                what = "an empty cell" if not cell else f"{cell!r}"
                raise DataFileError(
                    f"{path}, line {line}, column {col}: {what} is not a number; "
                    "inputs must be numeric (encode categories, impute missing values)"
                )
            row.append(value)
        values.append(row)
    return np.asarray(values, dtype=np.float64)
