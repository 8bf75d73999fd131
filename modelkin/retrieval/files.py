"""Reading the user's files: query samples (``.npz`` with ``x`` and ``y``, or ``.csv`` with the label last) and
probe pools (``.npz`` with ``x``, or ``.npy``). Errors name the file and say what is wrong in one sentence."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from modelkin.errors import InvalidProbePool, InvalidQueryData


def read_query(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) as stored; their content is checked by :func:`modelkin.retrieval.features.check_query`."""
    if not path.is_file():
        raise InvalidQueryData(f"{path} does not exist or is not a file.")
    if path.suffix.lower() == ".csv":
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2, comments="#")
        except ValueError as exc:
            raise InvalidQueryData(f"{path} is not a numeric CSV table ({exc}).") from None
        if table.shape[1] < 2:
            raise InvalidQueryData(f"{path} needs at least one feature column and the label in the last column.")
        return table[:, :-1], table[:, -1]
    arrays = _npz(path, InvalidQueryData)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise InvalidQueryData(f"{path} has no array {missing[0]!r}; a query .npz holds x (samples) and y (labels).")
    return arrays["x"], arrays["y"]


def read_pool(path: Path) -> np.ndarray:
    """The (samples, features) float32 inputs of a probe pool file."""
    if not path.is_file():
        raise InvalidProbePool(f"{path} does not exist or is not a file.")
    if path.suffix.lower() == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InvalidProbePool(f"{path} is not a readable .npy array ({exc}).") from None
    else:
        arrays = _npz(path, InvalidProbePool)
        if "x" not in arrays:
            raise InvalidProbePool(f"{path} has no array 'x' of probe inputs.")
        x = arrays["x"]
    if x.ndim != 2 or x.shape[0] < 2 or not np.issubdtype(x.dtype, np.number):
        raise InvalidProbePool(f"{path}: probe inputs must be a numeric (samples, features) array of at least 2 rows, "
                               f"got {x.dtype} {list(x.shape)}.")  # fmt: skip
    if not np.isfinite(x).all():
        raise InvalidProbePool(f"{path}: the probe inputs contain NaN or inf.")
    return np.ascontiguousarray(x, dtype=np.float32)


def _npz(path: Path, error: type[Exception]) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise error(f"{path} is not an .npz archive of named arrays.")
        with data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, error):
            raise
        raise error(f"{path} is not a readable .npz file ({exc}).") from None
