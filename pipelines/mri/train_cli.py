"""``oncoagent train segmenter`` and ``oncoagent train classifier``: retrain the MRI models.

Data comes from a case folder (``--data DIR``, see :mod:`pipelines.mri.cases`) or is generated
(``--generate N`` cases from ``--seed``). Held-out data: ``--test-data DIR``, ``--test-generate M`` cases from
``--test-seed`` (a seed range that must not overlap the training seeds), or, with ``--data``, a seeded
``--test-fraction`` of the cases. Models land in ``--out`` (default ``<data-dir>/models/mri``) with metrics,
figures and a model card, and are recorded in that folder's ``manifest.json`` (``--no-record`` skips it).
Point the pipeline at a retrained model with ``pipelines: {mri-tumour: {manifest: <out>/manifest.json}}``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from pipelines.trainers import TrainSettings

DEFAULT_SEGMENTER = "mri-lesion-unet"
DEFAULT_CLASSIFIER = "mri-lesion-svm"
# generated segmenter training series span coarse and short acquisitions too (held-out ones stay clinical)
WIDE_MATRICES = (96, 128, 160, 192, 224, 256)
WIDE_COVERAGE_MM = (30.0, 190.0)
# the seed ranges the shipped models' training stages used (their cards), and the classifier's own held-out set
SHIPPED_TRAINING_SEEDS = ["10000:100", "10100:100", "10200:120", "10400:120", "20000:160", "70000:60"]


def add_parsers(subparsers: Any) -> None:
    seg = subparsers.add_parser("segmenter", help="train the MRI lesion U-Net (MONAI)")
    _data_arguments(seg, default_seed=10_000, default_test_seed=80_000)
    seg.add_argument("--iterations", type=int, default=2000, help="optimiser steps (default 2000)")
    seg.add_argument("--batch-size", type=int, default=2)
    seg.add_argument("--learning-rate", type=float, default=3e-3)
    seg.add_argument("--patch", type=int, nargs=3, default=(24, 80, 80), metavar=("Z", "Y", "X"),
                     help="training patch in voxels at the network spacing")
    seg.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 3.0), metavar=("X", "Y", "Z"),
                     help="spacing (mm) the network works at")
    seg.add_argument("--channels", type=int, nargs="+", default=(16, 32, 64, 128))
    seg.add_argument("--min-lesion-ml", type=float, default=0.5)
    seg.add_argument("--positive-fraction", type=float, default=0.7, help="patches centred on a lesion voxel")
    seg.add_argument("--hard-fraction", type=float, default=0.15,
                     help="patches centred on mined false positives (after the first mining)")
    seg.add_argument("--mining-at", type=float, nargs="*", default=(0.55, 0.8), metavar="FRACTION",
                     help="fractions of the schedule after which false positives are mined (none: no mining)")
    seg.add_argument("--thresholds", type=float, nargs="+", default=(0.3, 0.4, 0.5, 0.6),
                     help="probability thresholds to choose from on the validation cases (one value: fixed)")
    val = seg.add_mutually_exclusive_group()
    val.add_argument("--val-data", type=Path, help="validation case folder (chooses the threshold)")
    val.add_argument("--val-generate", type=int, default=8, metavar="V",
                     help="with --generate: V generated validation series (default 8) choose the threshold")
    seg.add_argument("--val-seed", type=int, default=85_000, help="first seed of generated validation series")
    seg.add_argument("--init", type=Path, metavar="WEIGHTS",
                     help="start from these weights (same --channels) instead of random ones: fine-tuning")
    seg.add_argument("--flips", type=int, nargs="*", default=(), metavar="AXIS",
                     help="test-time mirroring axes stored with the model (1 rows, 2 columns)")
    seg.add_argument("--matrix", type=int, nargs="+", default=WIDE_MATRICES, metavar="N",
                     help="in-plane matrices of generated training series (default: coarse to fine, so the "
                     "network also sees low-resolution acquisitions)")
    seg.add_argument("--coverage-mm", type=float, nargs=2, default=WIDE_COVERAGE_MM, metavar=("LO", "HI"),
                     help="range of the slice-direction coverage of generated training series")
    seg.add_argument("--name", default=DEFAULT_SEGMENTER)
    seg.set_defaults(trainer=cmd_train_segmenter)

    clf = subparsers.add_parser("classifier", help="train the MRI malignancy SVM (radiomics + genetic tuning)")
    _data_arguments(clf, default_seed=20_000, default_test_seed=70_000)
    clf.add_argument("--features", type=Path, help="a feature table CSV written by an earlier run (skips extraction)")
    clf.add_argument("--params", type=Path, help="pyradiomics parameter file (default config/radiomics.yaml)")
    clf.add_argument("--population", type=int, default=16, help="genetic algorithm population")
    clf.add_argument("--generations", type=int, default=12, help="genetic algorithm generations (at most)")
    clf.add_argument("--folds", type=int, default=5, help="stratified cross-validation folds")
    clf.add_argument("--name", default=DEFAULT_CLASSIFIER)
    clf.set_defaults(trainer=cmd_train_classifier)

    rel = subparsers.add_parser(
        "mri-release", help="choose the MRI U-Net's threshold on validation series, then score test series once "
        "(segmenter, classifier on truth masks, and the whole chain) and record the figures in the manifest")
    rel.add_argument("--validation-seed", type=int, default=80_000)
    rel.add_argument("--validation-count", type=int, default=30)
    rel.add_argument("--test-seed", type=int, default=81_000)
    rel.add_argument("--test-count", type=int, default=30)
    rel.add_argument("--thresholds", type=float, nargs="+", default=(0.3, 0.4, 0.5, 0.6))
    rel.add_argument("--training-seeds", nargs="*", default=SHIPPED_TRAINING_SEEDS, metavar="FIRST:COUNT",
                     help="seed ranges any training stage used (checked against the validation and test seeds)")
    rel.add_argument("--segmenter", default=DEFAULT_SEGMENTER)
    rel.add_argument("--classifier", default=DEFAULT_CLASSIFIER)
    rel.add_argument("--manifest", type=Path, help="the models' manifest (default: the shipped ones)")
    rel.add_argument("--no-record", action="store_true", help="print the figures, leave the manifest alone")
    rel.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE")
    rel.set_defaults(trainer=cmd_mri_release)


def _data_arguments(parser: argparse.ArgumentParser, default_seed: int, default_test_seed: int) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="case folder: <case>/image.nii.gz, <case>/mask.nii.gz, labels.csv")
    source.add_argument("--generate", type=int, metavar="N", help="train on N generated series")
    parser.add_argument("--seed", type=int, default=default_seed, help="first seed of generated training series")
    test = parser.add_mutually_exclusive_group()
    test.add_argument("--test-data", type=Path, help="held-out case folder")
    test.add_argument("--test-generate", type=int, metavar="M", help="hold out M generated series")
    parser.add_argument("--test-seed", type=int, default=default_test_seed, help="first seed of held-out series")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="with --data alone: fraction held out")
    parser.add_argument("--out", type=Path, help="output folder (default <data-dir>/models/mri)")
    parser.add_argument("--version", default="1.0.0", help="version recorded in the manifest")
    parser.add_argument("--no-record", action="store_true", help="do not record the model in a manifest")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")


class _Sources:
    """Training and held-out cases as the arguments ask; generated cases are made lazily."""

    def __init__(self, args: argparse.Namespace) -> None:
        from pipelines.mri.cases import read_case_folder

        self.args = args
        self.folder_train: list[Any] | None = None
        self.folder_test: list[Any] | None = None
        if args.data is not None:
            cases = read_case_folder(args.data)
            if args.test_data is None and args.test_generate is None:
                import numpy as np

                order = np.random.default_rng(args.seed).permutation(len(cases))
                held = max(1, round(len(cases) * args.test_fraction)) if len(cases) > 1 else 0
                self.folder_test = [cases[i] for i in order[:held]]
                self.folder_train = [cases[i] for i in order[held:]]
            else:
                self.folder_train = cases
        if args.test_data is not None:
            self.folder_test = read_case_folder(args.test_data)
        if args.generate is None and args.data is None:
            raise SystemExit("oncoagent train: give --data DIR or --generate N")
        if args.generate is not None and args.test_generate is not None:
            train_seeds = range(args.seed, args.seed + args.generate)
            test_seeds = range(args.test_seed, args.test_seed + args.test_generate)
            if set(train_seeds) & set(test_seeds):
                raise SystemExit("oncoagent train: --test-seed range overlaps the training seeds")

    def train(self) -> Any:
        from pipelines.mri.cases import generated_cases

        if self.folder_train is not None:
            return iter(self.folder_train)
        spec: dict[str, Any] = {}
        if getattr(self.args, "matrix", None):
            spec = {"matrix": tuple(self.args.matrix), "slices_mm": tuple(self.args.coverage_mm)}
        return generated_cases(range(self.args.seed, self.args.seed + self.args.generate), **spec)

    def test(self) -> list[Any]:
        from pipelines.mri.cases import generated_cases

        if self.folder_test is not None:
            return self.folder_test
        if self.args.test_generate:
            seeds = range(self.args.test_seed, self.args.test_seed + self.args.test_generate)
            return list(generated_cases(seeds))
        return []

    def describe(self) -> list[str]:
        a = self.args
        lines = []
        if a.data is not None:
            lines.append(f"training cases from {a.data} ({len(self.folder_train or [])} case(s))")
        else:
            lines.append(f"{a.generate} generated series (pipelines.synthetic.mri_series), seeds {a.seed}.."
                         f"{a.seed + a.generate - 1}"
                         + (f", matrices {', '.join(map(str, a.matrix))}, {a.coverage_mm[0]:g}-{a.coverage_mm[1]:g} mm "
                            "coverage" if getattr(a, "matrix", None) else ""))
        if a.test_data is not None:
            lines.append(f"held out: cases from {a.test_data}")
        elif a.test_generate:
            lines.append(f"held out: {a.test_generate} generated series, seeds {a.test_seed}.."
                         f"{a.test_seed + a.test_generate - 1} (never used for training)")
        elif self.folder_test:
            lines.append(f"held out: {len(self.folder_test)} case(s), a seeded {a.test_fraction:.0%} of --data")
        return lines


def _out_dir(args: argparse.Namespace, settings: TrainSettings) -> Path:
    out: Path = args.out or settings.data_dir / "models" / "mri"
    return out


def _say(message: str) -> None:
    print(message, flush=True)


def _command() -> str:
    return "oncoagent " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_train_segmenter(args: argparse.Namespace, settings: TrainSettings) -> int:
    import torch

    from pipelines.mri.segmentation import SegmenterConfig
    from pipelines.mri.segmenter_training import SegmenterTrainingParams
    from pipelines.mri.training import run_segmenter_training

    torch.set_num_threads(max(1, args.threads))
    sources = _Sources(args)
    validation = _validation_cases(args, sources)
    config = SegmenterConfig(spacing_mm=tuple(args.spacing), channels=tuple(args.channels), flips=tuple(args.flips))
    params = SegmenterTrainingParams(
        iterations=args.iterations, batch_size=args.batch_size, patch_size=tuple(args.patch),
        learning_rate=args.learning_rate, seed=args.seed, min_lesion_ml=args.min_lesion_ml,
        positive_fraction=args.positive_fraction, hard_fraction=args.hard_fraction, mining_at=tuple(args.mining_at),
    )
    outcome = run_segmenter_training(
        sources.train(), sources.test(), _out_dir(args, settings), args.name, args.version, config, params,
        sources.describe() + _describe_validation(args, validation), _command(), record_model=not args.no_record,
        progress=_say, thresholds=tuple(args.thresholds), initial_weights=args.init, validation=validation,
    )
    for path in outcome.files:
        print(f"wrote {path}")
    return 0


def _validation_cases(args: argparse.Namespace, sources: _Sources) -> list[Any]:
    """The segmenter's validation cases: a folder, generated seeds, or a seeded share of a training folder.

    They choose the threshold; the test cases are scored after, once. Seeds must not overlap the others."""
    from pipelines.mri.cases import generated_cases, read_case_folder

    if args.val_data is not None:
        return read_case_folder(args.val_data)
    if sources.folder_train is not None:
        if len(sources.folder_train) < 3:
            return []
        share = max(1, round(len(sources.folder_train) * 0.15))
        validation, sources.folder_train = sources.folder_train[:share], sources.folder_train[share:]
        return validation
    if not args.val_generate:
        return []
    seeds = set(range(args.val_seed, args.val_seed + args.val_generate))
    for name, first, count in (("training", args.seed, args.generate), ("test", args.test_seed, args.test_generate)):
        if count and seeds & set(range(first, first + count)):
            raise SystemExit(f"oncoagent train: --val-seed range overlaps the {name} seeds")
    return list(generated_cases(sorted(seeds)))


def _describe_validation(args: argparse.Namespace, validation: list[Any]) -> list[str]:
    if not validation:
        return ["no validation cases: the threshold is fixed at the first --thresholds value"]
    if args.val_data is None and args.data is None:
        return [f"validation: {len(validation)} generated series, seeds {args.val_seed}.."
                f"{args.val_seed + len(validation) - 1} (chose the threshold; never used for training)"]
    return [f"validation: {len(validation)} case(s) (chose the threshold; never used for training)"]


def cmd_train_classifier(args: argparse.Namespace, settings: TrainSettings) -> int:
    from pipelines.mri.feature_table import FeatureTable, extract_table
    from pipelines.mri.genetic import GeneticSettings
    from pipelines.mri.radiomics import DEFAULT_PARAMS, RadiomicsExtractor
    from pipelines.mri.training import run_classifier_training

    out = _out_dir(args, settings)
    out.mkdir(parents=True, exist_ok=True)
    extractor = RadiomicsExtractor(args.params or DEFAULT_PARAMS)
    test: FeatureTable | None = None
    if args.features is not None:
        train = FeatureTable.load_csv(args.features)
        description = [f"features from {args.features}"]
        if train.params_sha256 != extractor.sha256:
            print("note: the feature table was made with other radiomics parameters than the current file",
                  flush=True)
    else:
        sources = _Sources(args)
        _say("extracting radiomics features of the training lesions")
        train = extract_table(sources.train(), extractor, _say)
        train.save_csv(out / f"{args.name}.train-features.csv")
        held = sources.test()
        if held:
            _say(f"extracting radiomics features of {len(held)} held-out case(s)")
            test = extract_table(held, extractor, _say)
            test.save_csv(out / f"{args.name}.test-features.csv")
        description = sources.describe()
    description.append(f"{len(train)} training lesion(s)" + (f", {len(test)} held-out" if test is not None else ""))
    outcome = run_classifier_training(
        train, test, out, args.name, args.version,
        GeneticSettings(population=args.population, generations=args.generations, seed=args.seed),
        args.folds, description, _command(), record_model=not args.no_record, progress=_say,
    )
    for path in outcome.files:
        print(f"wrote {path}")
    return 0


def cmd_mri_release(args: argparse.Namespace, settings: TrainSettings) -> int:
    import json

    from pipelines.models.registry import resolve
    from pipelines.mri.release import ReleaseSets, SeedRange, evaluate_release, record_release

    def seed_range(text: str) -> SeedRange:
        first, _, count = text.partition(":")
        return SeedRange(int(first), int(count))

    sets = ReleaseSets(SeedRange(args.validation_seed, args.validation_count),
                       SeedRange(args.test_seed, args.test_count),
                       tuple(seed_range(t) for t in args.training_seeds))
    try:
        sets.check()
    except ValueError as exc:
        raise SystemExit(f"oncoagent train mri-release: {exc}") from exc
    figures = evaluate_release(resolve(args.segmenter, args.manifest), resolve(args.classifier, args.manifest),
                               sets, args.thresholds, progress=_say)
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    if not args.no_record:
        record_release(figures, args.segmenter, args.classifier, args.manifest)
        _say(f"recorded in the manifest of {args.segmenter} and {args.classifier}")
    return 0
