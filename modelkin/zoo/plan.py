"""What a zoo of a given size and seed contains: its models (with recipes and parents) and its query tasks.

Planning is pure bookkeeping (no training), deterministic for (size, seed). The shape of the family tree is
chosen to be hard for lineage methods: same-data roots that differ only by seed, hubs with many children
(siblings are where lineage methods fail), chains of at least four generations, merges of two relatives, and
near-copies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelkin.zoo.recipes import RELATIONS, Recipe, Spec, arch_key, architecture, output_spec, trunk_layers
from modelkin.zoo.tasks import DIGIT_DOMAINS, Task, num_classes, rng_for, synthetic_domain
from modelkin.zoo.training import OPTIMISERS

GENERATIONS = 4
MAX_GENERATION = 6


@dataclass(frozen=True)
class ZooSize:
    """The knobs of one zoo size."""

    archs: tuple[str, ...]
    root_tasks: int  # distinct tasks roots are trained on, each by every architecture
    twins: int  # extra roots on the first root task with another seed: same data, hard to tell apart
    hubs: int  # roots that get many children
    hub_children: int
    chains: int  # chains of GENERATIONS descendants
    merges: int
    models: int  # total; random descendants fill up to it
    meta_train_tasks: int
    meta_test_tasks: int
    heldout_domains: int  # digit domains that only meta-test tasks use
    synthetic_domains: int
    steps: int  # optimiser steps of a root; a descendant takes a third to all of it
    shots: int  # labelled samples per class in a query task's file
    transfer_draws: int  # random support sets each transfer score is averaged over
    meta_train_sample: float  # share of models scored on each meta-train task (meta-test: all)


# fmt: off
SIZES: dict[str, ZooSize] = {
    "tiny": ZooSize(
        archs=("mlp-s", "mlp-l", "cnn"), root_tasks=2, twins=1, hubs=1, hub_children=10, chains=1, merges=2,
        models=24, meta_train_tasks=2, meta_test_tasks=2, heldout_domains=1, synthetic_domains=1, steps=100,
        shots=5, transfer_draws=1, meta_train_sample=0.3,
    ),
    "small": ZooSize(
        archs=("mlp-s", "mlp-l", "cnn"), root_tasks=3, twins=3, hubs=3, hub_children=10, chains=3, merges=6,
        models=90, meta_train_tasks=12, meta_test_tasks=8, heldout_domains=1, synthetic_domains=2, steps=250,
        shots=5, transfer_draws=2, meta_train_sample=0.25,
    ),
    "full": ZooSize(
        archs=("mlp-s", "mlp-l", "mlp-d", "cnn"), root_tasks=5, twins=8, hubs=4, hub_children=16, chains=8,
        merges=16, models=260, meta_train_tasks=28, meta_test_tasks=16, heldout_domains=2, synthetic_domains=3,
        steps=250, shots=5, transfer_draws=3, meta_train_sample=0.2,
    ),
}
# fmt: on

# Ways to derive a child; hubs cycle through all of them, chains through those that keep training going.
VARIANTS = ("finetune", "near-copy", "frozen", "head-only", "new-head", "lora", "prune", "quantize-8", "quantize-4",
            "distill")  # fmt: skip
CHAIN_VARIANTS = ("finetune", "frozen", "new-head", "lora", "prune", "quantize-8", "near-copy")


@dataclass
class PlannedModel:
    """One model to build: its recipe, parents (plan indices) and where it sits in the tree."""

    arch: str
    spec: Spec
    parents: tuple[int, ...]
    generation: int
    root: int  # plan index of the root its weights descend from (a student is its own root)
    task: Task  # the task it was last trained on; its ``accuracy`` is measured on that task's held-out samples
    recipe: Recipe
    variant: str | None
    name: str = ""

    @property
    def relation(self) -> str | None:
        return RELATIONS[self.recipe["op"]]


@dataclass
class Plan:
    size: str
    seed: int
    config: ZooSize
    models: list[PlannedModel] = field(default_factory=list)
    tasks: dict[str, tuple[Task, str]] = field(default_factory=dict)  # name -> (task, split)
    heldout_domains: tuple[str, ...] = ()

    def scored_models(self, task_name: str) -> list[str]:
        """Every model for a meta-test task; a seeded sample of them for a meta-train task."""
        names = [m.name for m in self.models]
        if self.tasks[task_name][1] == "meta-test":
            return names
        k = max(1, round(len(names) * self.config.meta_train_sample))
        pick = rng_for(self.seed, 20, *task_name.encode()).choice(len(names), k, replace=False)
        return [names[i] for i in sorted(pick)]


class _Planner:
    def __init__(self, size: str, seed: int) -> None:
        self.plan = Plan(size, seed, SIZES[size])
        self.cfg = self.plan.config
        self.rng = rng_for(seed, 0)
        self.synthetic = [synthetic_domain(i) for i in range(self.cfg.synthetic_domains)]

    # -- random choices ----------------------------------------------------------------------------------

    def _classes(self, domain: str, low: int, high: int) -> tuple[int, ...]:
        n = num_classes(domain)
        k = int(self.rng.integers(low, min(high, n) + 1))
        return tuple(sorted(int(c) for c in self.rng.choice(n, k, replace=False)))

    def _optimiser(
        self, steps: tuple[int, int], lr_scale: float = 1.0, names: tuple[str, ...] = OPTIMISERS
    ) -> dict[str, Any]:
        name = str(self.rng.choice(names))
        low, high, cap = (3e-3, 2e-2, 3e-2) if name == "sgd" else (5e-4, 3e-3, 1e-2)
        lr = min(cap, float(np.exp(self.rng.uniform(np.log(low), np.log(high)))) * lr_scale)
        return {
            "name": name,
            "lr": float(f"{lr:.3g}"),
            "steps": int(self.rng.integers(steps[0], steps[1] + 1)),
            "batch_size": int(self.rng.choice([32, 64, 128])),
        }

    def _seed(self) -> int:
        return int(rng_for(self.plan.seed, 10, len(self.plan.models)).integers(2**31))

    def _child_task(self, parent: PlannedModel, new_head: bool) -> Task:
        """Keep the parent's classes (same task, or the same classes in another domain) or pick new ones.

        Inverted digits are not a shift target: flipping every input's mean is more than a short fine-tune of a
        narrow net recovers from (accuracy stays near zero), and published zoos do not keep such models.
        """
        domain = parent.task.domain
        if new_head:
            while (task := Task(domain, self._classes(domain, 3, 10))).classes == parent.task.classes:
                pass
            return task
        if domain in DIGIT_DOMAINS and self.rng.random() < 0.4:
            targets = [d for d in DIGIT_DOMAINS if d not in (domain, "inverted")]
            return Task(str(self.rng.choice(targets)), parent.task.classes)
        return parent.task

    # -- models ------------------------------------------------------------------------------------------

    def _add(self, recipe: Recipe, parents: tuple[int, ...], task: Task, variant: str | None) -> int:
        models = self.plan.models
        spec = output_spec(recipe, [models[p].spec for p in parents])
        index = len(models)
        own_root = not parents or recipe["op"] == "distill"
        models.append(
            PlannedModel(
                arch=arch_key(spec),
                spec=spec,
                parents=parents,
                generation=1 + max((models[p].generation for p in parents), default=-1),
                root=index if own_root else models[parents[0]].root,
                task=task,
                recipe=recipe,
                variant=variant,
            )
        )
        return index

    def _root(self, arch: str, task: Task) -> int:
        spec = architecture(arch, len(task.classes))
        recipe = {
            "op": "train",
            "architecture": spec,
            "task": task.to_json(),
            "optimizer": {"name": "adam", "lr": 3e-3, "steps": self.cfg.steps, "batch_size": 64},
            "seed": self._seed(),
        }
        return self._add(recipe, (), task, None)

    def _child(self, parent_index: int, variant: str) -> int:
        parent = self.plan.models[parent_index]
        steps = self.cfg.steps
        recipe: Recipe = {"seed": self._seed()}
        task = parent.task
        if variant == "near-copy":
            recipe.update(
                op="finetune",
                task=task.to_json(),
                new_head=False,
                freeze=[],
                data_fraction=0.25,
                optimizer={"name": "adam", "lr": 1e-5, "steps": 3, "batch_size": 64},
            )
        elif variant in ("finetune", "frozen", "head-only", "new-head", "lora"):
            new_head = variant in ("new-head", "head-only") or (variant == "lora" and self.rng.random() < 0.3)
            task = self._child_task(parent, new_head)
            # A fresh head, frozen layers, LoRA factors or a new domain need more than a plain fine-tune.
            shifted = task.domain != parent.task.domain
            harder = shifted or new_head or variant in ("frozen", "lora")
            recipe.update(
                task=task.to_json(),
                new_head=new_head,
                data_fraction=float(self.rng.choice([0.5, 1.0] if shifted else [0.25, 0.5, 1.0])),
                optimizer=self._optimiser(
                    (steps // 2, steps) if harder else (steps // 3, steps // 2),
                    lr_scale=3.0 if harder else 1.0,
                    names=("adam", "adamw") if variant == "lora" else OPTIMISERS,  # as LoRA is trained in practice
                ),
            )
            if variant == "lora":
                rank = int(self.rng.integers(2, 9))
                recipe.update(op="lora", rank=rank, alpha=float(2 * rank))
            else:
                layers = trunk_layers(parent.spec)
                frozen = {
                    "finetune": 0,
                    "new-head": 0,
                    "head-only": len(layers),
                    "frozen": int(self.rng.integers(1, max(1, len(layers) - 1) + 1)),
                }[variant]
                recipe.update(op="finetune", freeze=list(layers[:frozen]))
        elif variant == "prune":
            retrain = self.rng.random() < 0.7
            recipe.update(
                op="prune",
                sparsity=round(float(self.rng.uniform(0.5, 0.9)), 2),
                task=task.to_json(),
                optimizer={"name": "adam", "lr": 1e-3, "steps": steps // 3, "batch_size": 64} if retrain else None,
            )
        elif variant in ("quantize-8", "quantize-4"):
            recipe = {"op": "quantize", "bits": int(variant.split("-")[1])}
        elif variant == "distill":
            student = architecture(str(self.rng.choice(self.cfg.archs)), parent.spec["num_classes"])
            recipe.update(
                op="distill",
                student=student,
                task=task.to_json(),
                temperature=float(self.rng.choice([2.0, 4.0])),
                optimizer={"name": "adam", "lr": 3e-3, "steps": steps, "batch_size": 64},
            )
        return self._add(recipe, (parent_index,), task, variant)

    def _merge(self) -> int | None:
        """Average two relatives (same root, architecture and classes), as model soups and WiSE-FT do."""
        models = self.plan.models
        pairs = [
            (a, b)
            for a, b in itertools.combinations(range(len(models)), 2)
            if models[a].root == models[b].root
            and models[a].spec == models[b].spec
            and models[a].task.classes == models[b].task.classes
            and models[a].generation < MAX_GENERATION
            and models[b].generation < MAX_GENERATION
        ]
        if not pairs:
            return None
        a, b = pairs[int(self.rng.integers(len(pairs)))]
        weight = round(float(self.rng.uniform(0.3, 0.7)), 2)
        recipe = {"op": "merge", "weights": [weight, round(1 - weight, 2)]}
        return self._add(recipe, (a, b), models[a].task, None)

    def models(self) -> None:
        cfg = self.cfg
        root_tasks = [Task("original", tuple(range(10)))]
        if self.synthetic:
            root_tasks.append(Task(self.synthetic[0], tuple(range(num_classes(self.synthetic[0])))))
        while len(root_tasks) < cfg.root_tasks:
            domain = str(self.rng.choice([*DIGIT_DOMAINS[1:], *self.synthetic]))
            root_tasks.append(Task(domain, self._classes(domain, 5, 10)))
        roots = [self._root(arch, task) for task in root_tasks[: cfg.root_tasks] for arch in cfg.archs]
        roots += [self._root(cfg.archs[i % len(cfg.archs)], root_tasks[0]) for i in range(cfg.twins)]
        for hub in roots[: cfg.hubs]:
            order = self.rng.permutation(len(VARIANTS))
            for i in range(cfg.hub_children):
                self._child(hub, VARIANTS[order[i % len(VARIANTS)]])
        for _ in range(cfg.chains):
            link = roots[int(self.rng.integers(len(roots)))]
            for _ in range(GENERATIONS):
                link = self._child(link, str(self.rng.choice(CHAIN_VARIANTS)))
        for _ in range(cfg.merges):
            self._merge()
        while len(self.plan.models) < cfg.models:
            eligible = [i for i, m in enumerate(self.plan.models) if m.generation < MAX_GENERATION]
            if self.rng.random() < 0.1 and self._merge() is not None:
                continue
            self._child(eligible[int(self.rng.integers(len(eligible)))], str(self.rng.choice(VARIANTS)))
        self._name_models()

    def _name_models(self) -> None:
        """``<arch>-<serial>`` with serials in seeded random order, so a name tells nothing about lineage."""
        models = self.plan.models
        width = max(3, len(str(len(models) - 1)))
        for serial, index in enumerate(self.rng.permutation(len(models))):
            models[index].name = f"{models[index].arch}-{serial:0{width}d}"

    # -- query tasks -------------------------------------------------------------------------------------

    def tasks(self) -> None:
        """Meta-test tasks use class subsets no meta-train task uses, half of them in held-out digit domains."""
        cfg = self.cfg
        heldout = [str(d) for d in self.rng.choice(DIGIT_DOMAINS[1:], cfg.heldout_domains, replace=False)]
        seen = [str(d) for d in self.rng.permutation([d for d in DIGIT_DOMAINS if d not in heldout] + self.synthetic)]
        train = self._draw_tasks(cfg.meta_train_tasks, seen, "meta-train", avoid=set())
        avoid = {task.classes for task in train}
        n_heldout = (cfg.meta_test_tasks + 1) // 2
        self._draw_tasks(n_heldout, heldout, "meta-test", avoid)
        self._draw_tasks(cfg.meta_test_tasks - n_heldout, seen[::-1], "meta-test", avoid)
        self.plan.heldout_domains = tuple(heldout)

    def _draw_tasks(self, n: int, domains: list[str], split: str, avoid: set[tuple[int, ...]]) -> list[Task]:
        """``n`` new tasks of 3-6 classes, cycling through ``domains``, with class subsets not in ``avoid``."""
        drawn: list[Task] = []
        for domain in itertools.cycle(domains):
            if len(drawn) == n:
                break
            task = Task(domain, self._classes(domain, 3, 6))
            if task.classes not in avoid and task.name not in self.plan.tasks:
                self.plan.tasks[task.name] = (task, split)
                drawn.append(task)
        return drawn


def make_plan(size: str, seed: int) -> Plan:
    planner = _Planner(size, seed)
    planner.models()
    planner.tasks()
    return planner.plan
