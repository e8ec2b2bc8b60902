"""A small, seeded genetic algorithm over mixed hyperparameters (log-scaled reals, integers, choices).

Each individual is a vector of genes in [0, 1) (choices and integers are decoded from it). A generation keeps
the best ``elite`` individuals, and fills the rest by tournament selection, blend crossover (BLX-alpha) and
Gaussian mutation. Fitness values are cached by decoded genome, so an individual is never evaluated twice.
The search stops after ``generations`` or when the best fitness has not improved for ``patience`` of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

GeneValue = float | int | str
Genome = dict[str, GeneValue]


@dataclass(frozen=True)
class Gene:
    name: str
    kind: Literal["log", "int", "choice"]
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()

    def decode(self, u: float) -> GeneValue:
        u = min(max(u, 0.0), 1.0 - 1e-12)
        if self.kind == "choice":
            return self.choices[int(u * len(self.choices))]
        if self.kind == "int":
            return int(self.low + u * (self.high - self.low + 1))
        value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return float(f"{value:.4g}")  # 4 significant digits: neighbours share a cache entry


@dataclass(frozen=True)
class GeneticSettings:
    population: int = 16
    generations: int = 12
    elite: int = 2
    tournament: int = 3
    crossover_rate: float = 0.9
    blend_alpha: float = 0.3
    mutation_rate: float = 0.2  # per gene
    mutation_sigma: float = 0.12  # in units of the gene's range
    patience: int = 5
    seed: int = 0


@dataclass(frozen=True)
class Individual:
    genome: Genome
    fitness: float


@dataclass(frozen=True)
class SearchResult:
    best: Individual
    history: list[dict[str, float]] = field(default_factory=list)  # per generation: best, mean, evaluations
    evaluations: int = 0


def genetic_search(
    space: Sequence[Gene],
    fitness: Callable[[Genome], float],
    settings: GeneticSettings = GeneticSettings(),
) -> SearchResult:
    """Maximise ``fitness`` over ``space``."""
    if settings.population < 2 or settings.elite >= settings.population:
        raise ValueError("population must be at least 2 and larger than elite")
    rng = np.random.default_rng(settings.seed)
    cache: dict[tuple[GeneValue, ...], float] = {}

    def decode(u: npt.NDArray[np.float64]) -> Genome:
        return {g.name: g.decode(float(v)) for g, v in zip(space, u, strict=True)}

    def score(u: npt.NDArray[np.float64]) -> float:
        genome = decode(u)
        key = tuple(genome[g.name] for g in space)
        if key not in cache:
            value = float(fitness(genome))
            cache[key] = value if math.isfinite(value) else -math.inf
            log.debug("fitness %.4f for %s", cache[key], genome)
        return cache[key]

    population = rng.random((settings.population, len(space)))
    scores = np.array([score(u) for u in population])
    history: list[dict[str, float]] = []
    best_so_far, stale = -math.inf, 0
    for generation in range(settings.generations):
        order = np.argsort(-scores, kind="stable")
        population, scores = population[order], scores[order]
        finite = scores[np.isfinite(scores)]
        history.append({"generation": float(generation), "best": float(scores[0]),
                        "mean": float(finite.mean()) if finite.size else -math.inf,
                        "evaluations": float(len(cache))})
        log.info("generation %d: best %.4f (%s), %d evaluations", generation, scores[0], decode(population[0]),
                 len(cache))
        if scores[0] > best_so_far + 1e-9:
            best_so_far, stale = float(scores[0]), 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
        if generation == settings.generations - 1:
            break
        children = [population[i].copy() for i in range(settings.elite)]
        while len(children) < settings.population:
            a, b = _tournament(scores, settings.tournament, rng), _tournament(scores, settings.tournament, rng)
            child = population[a].copy()
            if rng.random() < settings.crossover_rate:
                child = _blend(population[a], population[b], settings.blend_alpha, rng)
            mutate = rng.random(len(space)) < settings.mutation_rate
            child = np.where(mutate, child + rng.normal(0, settings.mutation_sigma, len(space)), child)
            children.append(np.clip(child, 0.0, 1.0 - 1e-9))
        population = np.array(children)
        scores = np.array([score(u) for u in population])
    best = int(np.argmax(scores))
    return SearchResult(Individual(decode(population[best]), float(scores[best])), history, len(cache))


def _tournament(scores: npt.NDArray[np.float64], size: int, rng: np.random.Generator) -> int:
    contestants = rng.choice(len(scores), size=min(size, len(scores)), replace=False)
    return int(contestants[np.argmax(scores[contestants])])


def _blend(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], alpha: float,
           rng: np.random.Generator) -> npt.NDArray[np.float64]:
    low, high = np.minimum(a, b), np.maximum(a, b)
    spread = high - low
    child: npt.NDArray[np.float64] = rng.uniform(low - alpha * spread, high + alpha * spread)
    return child
