"""The data every zoo model is trained and measured on, made offline from one seed.

Input space ``digits-64``: 64 floats in [0, 1]. scikit-learn's 8x8 digits are scaled by 1/16 and seen through six
domains (original, rotated, flipped, inverted, noisy, a fixed pixel permutation); synthetic
``make_classification`` tasks (64 features) are squashed into the same box with ``expit(x / 2)``, so one probe
pool covers every model and transfer scores are comparable across all of them.

Each source of samples (the digits, each synthetic generator) is split once, per class, into three disjoint
pools: ``probe`` (unlabelled probe inputs only), ``source`` (what zoo models are trained and checked on) and
``query`` (what retrieval query tasks are made of and their transfer scores measured on). No image is in two
pools, so transfer scores are not inflated by models that have seen the query's images, and the probe pool is
disjoint from all training and test data.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.datasets import load_digits, make_classification

INPUT_SPACE = "digits-64"
INPUT_SPACE_DESCRIPTION = (
    "64 float32 features in [0, 1]: an 8x8 digit image, row-major, ink scaled by 1/16 (in one of the domains "
    "original, rotated, flipped, inverted, noisy, permuted), or make_classification features squashed by expit(x/2)"
)
DIGIT_DOMAINS = ("original", "rotated", "flipped", "inverted", "noisy", "permuted")
SYNTHETIC_CLASSES = 8
POOL_FRACTIONS = {"probe": 0.15, "source": 0.45, "query": 0.40}
SOURCE_EVAL_FRACTION = 0.2
NOISE_SIGMA = 0.25
_SYNTHETIC_SAMPLES = 1800

Arrays = tuple[np.ndarray, np.ndarray]


def synthetic_domain(index: int) -> str:
    return f"synthetic-{string.ascii_lowercase[index]}"


def num_classes(domain: str) -> int:
    return 10 if domain in DIGIT_DOMAINS else SYNTHETIC_CLASSES


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per purpose, so adding one random draw never shifts another."""
    return np.random.default_rng([seed, *stream])


@dataclass(frozen=True)
class Task:
    """A labelled task: a domain and a subset of its classes; labels are indices into ``classes``."""

    domain: str
    classes: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.domain}-{''.join(map(str, self.classes))}"

    def to_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "classes": list(self.classes)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Task:
        return cls(obj["domain"], tuple(obj["classes"]))


class ZooData:
    """All samples of one zoo: deterministic for ``seed`` and the number of synthetic domains."""

    def __init__(self, seed: int, synthetic_domains: int) -> None:
        self.seed = seed
        digits = load_digits()
        self._x: dict[str, np.ndarray] = {"digits": (digits.data / 16.0).astype(np.float32)}
        self._y: dict[str, np.ndarray] = {"digits": digits.target.astype(np.int64)}
        for i in range(synthetic_domains):
            x, y = make_classification(
                n_samples=_SYNTHETIC_SAMPLES,
                n_features=64,
                n_informative=16,
                n_redundant=8,
                n_classes=SYNTHETIC_CLASSES,
                n_clusters_per_class=2,
                class_sep=2.0,
                random_state=int(rng_for(seed, 1, i).integers(2**31)),
            )
            self._x[synthetic_domain(i)] = expit(x / 2.0).astype(np.float32)
            self._y[synthetic_domain(i)] = y.astype(np.int64)
        self._pools = {source: _split_pools(self._y[source], rng_for(seed, 2, k)) for k, source in enumerate(self._y)}
        rng = rng_for(seed, 3)
        self._noise = rng.normal(0.0, NOISE_SIGMA, self._x["digits"].shape).astype(np.float32)
        self._permutation = rng.permutation(64)

    @property
    def synthetic_domains(self) -> list[str]:
        return [source for source in self._x if source != "digits"]

    @property
    def domains(self) -> list[str]:
        return [*DIGIT_DOMAINS, *self.synthetic_domains]

    def _samples(self, domain: str, index: np.ndarray) -> np.ndarray:
        """Inputs ``index`` of the domain's source, transformed into the domain."""
        if domain not in DIGIT_DOMAINS:
            return self._x[domain][index]
        x = self._x["digits"][index]
        images = x.reshape(-1, 8, 8)
        transformed = {
            "original": lambda: x,
            "rotated": lambda: np.rot90(images, k=1, axes=(1, 2)).reshape(-1, 64),
            "flipped": lambda: images[:, :, ::-1].reshape(-1, 64),
            "inverted": lambda: 1.0 - x,
            "noisy": lambda: np.clip(x + self._noise[index], 0.0, 1.0),
            "permuted": lambda: x[:, self._permutation],
        }[domain]()
        return np.ascontiguousarray(transformed, dtype=np.float32)

    def _task_samples(self, task: Task, pool: str) -> Arrays:
        source = "digits" if task.domain in DIGIT_DOMAINS else task.domain
        index = self._pools[source][pool]
        labels = self._y[source][index]
        keep = index[np.isin(labels, task.classes)]
        y = np.searchsorted(np.array(task.classes), self._y[source][keep])
        return self._samples(task.domain, keep), y.astype(np.int64)

    def source(self, task: Task) -> tuple[Arrays, Arrays]:
        """(train, eval) samples of ``task`` from the source pool: what zoo models learn and are checked on."""
        x, y = self._task_samples(task, "source")
        n_eval = int(round(len(y) * SOURCE_EVAL_FRACTION))
        return (x[n_eval:], y[n_eval:]), (x[:n_eval], y[:n_eval])

    def query(self, task: Task, shots: int, draw: int = 0) -> tuple[Arrays, Arrays]:
        """(support, eval): ``shots`` random samples per class of the query pool, and the rest of it.

        Draw 0 is the task's file; transfer scores average over several draws, so that they describe the task
        rather than one lucky or unlucky support set.
        """
        x, y = self._task_samples(task, "query")
        rng = rng_for(self.seed, 4, draw, *task.name.encode())
        support = np.zeros(len(y), dtype=bool)
        for label in range(len(task.classes)):
            support[rng.choice(np.flatnonzero(y == label), shots, replace=False)] = True
        return (x[support], y[support]), (x[~support], y[~support])

    def probes(self) -> np.ndarray:
        """Unlabelled probe inputs: the probe pool of the digits in every domain, and of each synthetic domain."""
        parts = [self._samples(domain, self._pools["digits"]["probe"]) for domain in DIGIT_DOMAINS]
        parts += [self._samples(domain, self._pools[domain]["probe"]) for domain in self.synthetic_domains]
        return np.concatenate(parts)


def _split_pools(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per class, shuffled, cut into the pools by :data:`POOL_FRACTIONS`; each pool is in shuffled order."""
    pools: dict[str, list[np.ndarray]] = {name: [] for name in POOL_FRACTIONS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.cumsum([round(len(members) * f) for f in POOL_FRACTIONS.values()])[:-1]
        for name, part in zip(POOL_FRACTIONS, np.split(members, cuts), strict=True):
            pools[name].append(part)
    return {name: rng.permutation(np.concatenate(parts)) for name, parts in pools.items()}
