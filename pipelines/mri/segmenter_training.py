# mypy: disable-error-code="no-untyped-call"
# (SimpleITK ships without type annotations.)
"""Training the lesion U-Net: patches at the network's spacing, Dice + BCE loss, evaluation at native grids.

Cases are resampled once to the configured spacing and z-scored like at inference. Each step draws a batch
of patches, centred on a lesion voxel, anywhere in the body, or (once mined) on a false positive of the
network so far, flips them and jitters their intensity, and takes an AdamW step under a one-cycle schedule.
Hard-negative mining runs the network over a sample of training volumes at set points of the schedule and
keeps the voxels it wrongly calls lesion: look-alikes (bowel loops, kidneys, vessels) are what it must learn.
Evaluation runs the very inference path of the pipeline (:class:`~pipelines.mri.segmentation.Segmenter`) on
held-out cases and scores the lesion masks on each case's own grid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
import torch

from pipelines.mri.cases import Case
from pipelines.mri.segmentation import (
    Segmenter,
    SegmenterConfig,
    build_network,
    dice,
    lesions_from_probability,
    resample_to_spacing,
    zscore,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterTrainingParams:
    iterations: int = 2000
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (24, 80, 80)  # (z, y, x) voxels at the network spacing
    learning_rate: float = 3e-3
    positive_fraction: float = 0.7
    hard_fraction: float = 0.15  # of patches centred on mined false positives, once there are any
    mining_at: tuple[float, ...] = (0.55, 0.8)  # fractions of the schedule after which to mine
    mining_cases: int = 24  # training volumes searched per mining round
    seed: int = 0
    min_lesion_ml: float = 0.5


@dataclass(frozen=True)
class SegmenterEvaluation:
    dice_per_case: tuple[float, ...]
    lesions_true: int
    lesions_found: int  # true lesions overlapped by a predicted lesion
    false_lesions: int  # predicted lesions overlapping no true lesion
    seconds_per_case: float

    @property
    def mean_dice(self) -> float:
        return float(np.mean(self.dice_per_case)) if self.dice_per_case else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": len(self.dice_per_case),
            "mean_dice": round(self.mean_dice, 4),
            "min_dice": round(min(self.dice_per_case), 4) if self.dice_per_case else None,
            "dice_per_case": [round(d, 4) for d in self.dice_per_case],
            "lesions_true": self.lesions_true,
            "lesions_found": self.lesions_found,
            "lesion_sensitivity": round(self.lesions_found / self.lesions_true, 4) if self.lesions_true else None,
            "false_lesions": self.false_lesions,
            "seconds_per_case": round(self.seconds_per_case, 2),
        }


@dataclass
class _Prepared:
    image: npt.NDArray[np.float16]  # z-scored, at the network spacing
    mask: npt.NDArray[np.uint8]
    positives: npt.NDArray[np.int32]  # (n, 3) lesion voxel indices
    body: npt.NDArray[np.int32]  # (m, 3) foreground voxel indices (subsampled)
    hard: npt.NDArray[np.int32]  # (k, 3) voxels the network wrongly called lesion when last mined


def prepare(case: Case, config: SegmenterConfig) -> _Prepared:
    image = resample_to_spacing(case.image, config.spacing_mm)
    mask = sitk.Resample(case.labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    array = zscore(sitk.GetArrayViewFromImage(image))
    binary = (sitk.GetArrayFromImage(mask) > 0).astype(np.uint8)
    positives = np.argwhere(binary > 0).astype(np.int32)
    body = np.argwhere(array > -0.5)[::97].astype(np.int32)
    return _Prepared(array.astype(np.float16), binary, positives, body, np.zeros((0, 3), dtype=np.int32))


def _patch(prepared: _Prepared, centre: npt.NDArray[np.int32], size: tuple[int, int, int],
           ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    image = np.full(size, float(prepared.image.min()), dtype=np.float32)
    mask = np.zeros(size, dtype=np.float32)
    src, dst = [], []
    for c, n, s in zip(centre, prepared.image.shape, size, strict=True):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    image[tuple(dst)] = prepared.image[tuple(src)]
    mask[tuple(dst)] = prepared.mask[tuple(src)]
    return image, mask


def _batch(prepared: Sequence[_Prepared], params: SegmenterTrainingParams, rng: np.random.Generator,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = [], []
    with_hard = [p for p in prepared if len(p.hard)]
    for _ in range(params.batch_size):
        draw = rng.random()
        if with_hard and draw < params.hard_fraction:
            case = with_hard[int(rng.integers(len(with_hard)))]
            pool = case.hard
        else:
            case = prepared[int(rng.integers(len(prepared)))]
            pool = case.positives if (len(case.positives) and rng.random() < params.positive_fraction) else case.body
        centre = pool[int(rng.integers(len(pool)))] if len(pool) else np.array(case.image.shape) // 2
        centre = centre + rng.integers(-4, 5, 3) * np.array([0, 1, 1])
        image, mask = _patch(case, centre, params.patch_size)
        for axis in (1, 2):
            if rng.random() < 0.5:
                image, mask = np.flip(image, axis), np.flip(mask, axis)
        image = image * rng.uniform(0.85, 1.15) + rng.uniform(-0.15, 0.15)
        images.append(np.ascontiguousarray(image))
        masks.append(np.ascontiguousarray(mask))
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(masks)[:, None])


def mine_false_positives(network: torch.nn.Module, prepared: Sequence[_Prepared], config: SegmenterConfig,
                         params: SegmenterTrainingParams, rng: np.random.Generator) -> int:
    """Run the network on a sample of training volumes and remember where it is wrong; returns the count."""
    from monai.inferers.utils import sliding_window_inference

    network.eval()
    chosen = rng.choice(len(prepared), size=min(params.mining_cases, len(prepared)), replace=False)
    found = 0
    with torch.inference_mode():
        for i in chosen:
            case = prepared[int(i)]
            tensor = torch.from_numpy(case.image.astype(np.float32))[None, None]
            logits = sliding_window_inference(tensor, config.roi_size, 2, network, overlap=0.25, mode="gaussian",
                                              padding_mode="replicate")
            assert isinstance(logits, torch.Tensor)
            wrong = (logits[0, 0].numpy() > 0) & (case.mask == 0)
            coords = np.argwhere(wrong).astype(np.int32)
            case.hard = coords[:: max(1, len(coords) // 2000)] if len(coords) else coords
            found += len(coords)
    network.train()
    return found


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice over the whole batch (patches without lesion do not each demand an empty prediction) + BCE."""
    prob = torch.sigmoid(logits)
    intersection = (prob * target).sum()
    soft_dice = (2 * intersection + 1.0) / (prob.sum() + target.sum() + 1.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    return (1 - soft_dice) + bce


def train_segmenter(
    train: Iterable[Case],
    config: SegmenterConfig,
    params: SegmenterTrainingParams,
    progress: Callable[[str], None] = log.info,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train a network on ``train`` (consumed once, case by case); returns it and the loss history.
    ``initial_state`` (a state dict of the same architecture) fine-tunes instead of starting afresh."""
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    t0 = time.monotonic()
    prepared = [prepare(case, config) for case in train]
    if not prepared:
        raise ValueError("no training cases")
    progress(f"prepared {len(prepared)} case(s) at {config.spacing_mm} mm in {time.monotonic() - t0:.0f} s")
    network = build_network(config)
    if initial_state is not None:
        network.load_state_dict(initial_state)
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=params.learning_rate, total_steps=max(params.iterations, 1), pct_start=0.1
    )
    network.train()
    history: list[dict[str, float]] = []
    running: list[float] = []
    mining_steps = {max(1, round(f * params.iterations)) for f in params.mining_at if 0 < f < 1}
    for step in range(1, params.iterations + 1):
        images, masks = _batch(prepared, params, rng)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(network(images), masks)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running.append(float(loss.item()))
        if step % 25 == 0 or step == params.iterations:
            entry = {"step": float(step), "loss": float(np.mean(running)), "seconds": time.monotonic() - t0}
            history.append(entry)
            running = []
            if step % 100 == 0 or step == params.iterations:
                progress(f"step {step}/{params.iterations} loss {entry['loss']:.4f} ({entry['seconds']:.0f} s)")
        if step in mining_steps and step < params.iterations:
            voxels = mine_false_positives(network, prepared, config, params, rng)
            progress(f"step {step}: mined {voxels} false-positive voxel(s) in "
                     f"{min(params.mining_cases, len(prepared))} volume(s) "
                     f"({time.monotonic() - t0:.0f} s)")
    network.eval()
    return network, history


def evaluate_segmenter(segmenter: Segmenter, cases: Sequence[Case], min_lesion_ml: float,
                       probabilities: Sequence[sitk.Image] | None = None,
                       threshold: float | None = None) -> SegmenterEvaluation:
    """Dice per case (all lesions together, on the case's own grid) and lesion-level detection counts.
    ``probabilities`` (one per case) skips inference; ``threshold`` overrides the model's."""
    dices, true_total, found, false = [], 0, 0, 0
    t0 = time.monotonic()
    cut = segmenter.config.threshold if threshold is None else threshold
    for i, case in enumerate(cases):
        prob = probabilities[i] if probabilities is not None else segmenter.probability(case.image)
        result = lesions_from_probability(prob, cut, min_lesion_ml)
        predicted = sitk.GetArrayViewFromImage(result.labels)
        truth = sitk.GetArrayViewFromImage(case.labels)
        dices.append(dice(predicted, truth))
        true_ids = [int(v) for v in np.unique(truth) if v]
        true_total += len(true_ids)
        found += sum(1 for i in true_ids if np.any(predicted[truth == i] > 0))
        false += sum(1 for lesion in result.lesions if not np.any(truth[predicted == lesion.label] > 0))
    seconds = (time.monotonic() - t0) / max(len(cases), 1)
    return SegmenterEvaluation(tuple(dices), true_total, found, false, seconds)


def select_threshold(segmenter: Segmenter, cases: Sequence[Case], min_lesion_ml: float,
                     candidates: Sequence[float]) -> tuple[float, dict[float, float], list[sitk.Image]]:
    """The candidate probability threshold with the best mean Dice on ``cases`` (validation data), the mean
    Dice of each candidate, and the probability maps (computed once)."""
    probabilities = [segmenter.probability(case.image) for case in cases]
    scores = {
        float(t): evaluate_segmenter(segmenter, cases, min_lesion_ml, probabilities, float(t)).mean_dice
        for t in candidates
    }
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    return best, scores, probabilities
