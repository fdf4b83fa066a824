"""The `tlcore` command: train, evaluate, predict.

Usage::

    tlcore train                                   # Fashion-MNIST from Debian, simple CNN
    tlcore train --data flowers/ --backbone resnet50 --weights imagenet --epochs 5 \\
                 --finetune-epochs 5 --batch-size 32 --img-size 224 --out runs/
    tlcore evaluate --model runs/model.tlc --data test/ --skip-corrupt
    tlcore predict --model runs/model.tlc photo.jpg photos/ 'more/*.png' [--json] [--tta]
    tlcore info runs/model.tlc [--json]                      # the model card
    tlcore models [resnet50 ...] [--json]                    # architectures and weights
    tlcore compare --backbones simple_cnn,mlp --epochs 2 --out runs/compare
    tlcore lr-find --data flowers/ --backbone mobilenet_v2 --weights imagenet   # suggests a rate
    tlcore export --model runs/model.tlc --format onnx --out model.onnx
    tlcore shard imagenet/train imagenet-shards --shard-size 1GB   # any source as tar shards
    tlcore serve --models runs/ --host 0.0.0.0 --port 8000   # every runs/*.tlc over HTTP

A user's error (a bad path, a corrupt image, a bad value) is one line on stderr,
``tlcore: error: <file>: <problem>``, and status 2; anything else is a bug: one line,
a hint, status 1. ``tlcore --debug ...`` or ``TLCORE_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

log = logging.getLogger("tlcore")

FASHION = "fashion-mnist"


def _open_data(args: argparse.Namespace):
    import tlcore
    from tlcore.learner import source_name

    if args.data == FASHION:
        size = args.img_size or 28
        small = size == 28  # the images' own size: the cifar presets take them as they are
        kwargs = dict(train_transform="cifar-train" if small else "imagenet-train",
                      eval_transform="cifar-eval" if small else "imagenet-eval")
        train = tlcore.fashion_mnist(train=True)
        test = tlcore.fashion_mnist(train=False)
        if args.limit:
            train = tlcore.Subset(train, tlcore.per_class_subset(train.labels(), args.limit // 10, args.seed))
        channels = 1 if args.backbone in ("simple_cnn", "mlp") else 3
        if args.augment:
            kwargs["train_transform"] = args.augment
        return "fashion-mnist", tlcore.ImageData(train, valid=args.valid or test, test=args.test, seed=args.seed,
                                                 image_size=size, batch_size=args.batch_size, channels=channels,
                                                 **kwargs)
    size = args.img_size or 224
    full = tlcore.open_dataset(args.data)  # opened once: an archive is read whole
    # The cifar presets take images at their own size (CIFAR at 32 px); others are resized.
    small = size <= 64 and full.image(0).shape[:2] == (size, size)
    data = tlcore.ImageData(full, val_split=args.val_split, seed=args.seed, image_size=size,
                            name=source_name(args.data), batch_size=args.batch_size, valid=args.valid,
                            test=args.test,
                            train_transform=args.augment or ("cifar-train" if small else "imagenet-train"),
                            eval_transform="cifar-eval" if small else "imagenet-eval",
                            per_class=args.limit // 10 if args.limit else None)
    return data.name, data


def _run_recipe(learner, args: argparse.Namespace) -> None:
    """Pretrained weights: head, then optional fine-tuning. From scratch: every layer."""
    options = _fit_options_given(args)
    if learner.weights:
        learner.fit_head(args.epochs, lr=args.lr, **options)
        if args.finetune_epochs:
            learner.fine_tune(args.finetune_epochs, lr=args.finetune_lr, unfreeze=args.unfreeze,
                              progressive=args.progressive, **options)
    else:
        learner.fit(args.epochs, lr=args.lr, **{"schedule": "cosine", **options})


# Training options the recipe flags above set (per phase), or that belong to the Learner.
_RECIPE_OWNED = {"epochs", "lr", "phase", "seed", "device", "amp", "checkpoint", "epoch_offset"}
_FIT_DEST = "fit_option_"


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> List[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers separated by commas") from None


def _class_weights(text: str) -> Union[str, List[float]]:
    """argparse type: "balanced" (scikit-learn's rule on the training labels) or one weight per class."""
    return text if text == "balanced" else _floats(text)


# --head's names for the C++ head kinds.
_HEADS = {"linear": "linear", "dropout": "dropout_linear", "mlp": "mlp"}


def _head_options(args: argparse.Namespace) -> Dict[str, object]:
    """Learner's head arguments from --head, --dropout and --hidden."""
    return {"head": _HEADS[args.head], "dropout": args.dropout, "hidden": args.hidden or []}


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    """One flag per training option of tlcore.fit_options() (defined once, in C++)."""
    import tlcore

    group = parser.add_argument_group("training options (each fit phase; see tlcore.fit_options())")
    kinds = {"int": int, "float": float, "str": str, "floats": _floats}
    for name, kind, help_text in tlcore.fit_options():
        if name in _RECIPE_OWNED:
            continue
        flags, dest = ["--" + name.replace("_", "-")], _FIT_DEST + name
        if name == "patience":
            flags.append("--early-stopping")  # Keras' name for it
        if kind == "bool":
            group.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif name == "class_weights":
            group.add_argument(*flags, dest=dest, type=_class_weights, default=None, metavar="balanced|A,B,...",
                               help=help_text + "; 'balanced': n_images / (n_classes x class count)")
        else:
            group.add_argument(*flags, dest=dest, type=kinds[kind], default=None, help=help_text,
                               metavar="A,B,..." if kind == "floats" else kind.upper())


def _fit_options_given(args: argparse.Namespace) -> dict:
    return {k[len(_FIT_DEST):]: v for k, v in vars(args).items() if k.startswith(_FIT_DEST) and v is not None}


def _without_nproc(argv: List[str]) -> List[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _train(args: argparse.Namespace) -> int:
    import tlcore
    from tlcore import distributed, run_config

    if args.nproc > 1 and distributed.world_size() == 1:
        distributed.launch([sys.executable, "-m", "tlcore.cli", *_without_nproc(args.argv)], args.nproc)
        return 0
    if args.budget:
        return _train_budget(args)
    data_name, data = _open_data(args)
    log.info("%s: %r", data_name, data)
    args.weights = args.weights or None  # --weights "" (e.g. over a config's): random init
    learner = tlcore.Learner(args.backbone, data, weights=args.weights, device=args.device, amp=args.amp or "off",
                             checkpoint_dir=Path(args.out) / "checkpoints" if args.resume else None,
                             **_head_options(args))
    log.info("%s: %d parameters", args.backbone, learner.model.parameter_count)
    _run_recipe(learner, args)
    if not distributed.is_main_process():
        return 0  # rank 0 evaluates and writes
    stem = f"{args.backbone}__{data_name}__img{data.image_size}__bs{data.batch_size}__ep{args.epochs}"
    model_path = learner.save(Path(args.out) / f"{stem}.tlc")
    config = run_config.write(args, Path(args.out) / f"{stem}.yaml")
    paths = learner.write_report(args.out, stem, split="test" if args.test else "val")
    print(paths["markdown"].read_text(encoding="utf-8"))
    log.info("configuration %s (re-run it with `tlcore train --config %s`)", config, config)
    # The saved file, loaded back, on one validation image: the model round-trips.
    answer = tlcore.load(model_path).predict(data.val.image(0, channels=data.channels))
    log.info("prediction for %s: %s (%.2f); true %s", data.val.source(0), answer["prediction"],
             answer["confidence"], data.classes[data.val.label(0)])
    log.info("model %s", model_path)
    return 0


def _train_budget(args: argparse.Namespace) -> int:
    """--budget: tlcore plans the recipe; the report is on images no choice saw."""
    import tlcore
    from tlcore.calibration import DEFAULT_KEEP

    fashion = args.data == FASHION
    source = tlcore.fashion_mnist(train=True) if fashion else args.data
    test = args.test or (tlcore.fashion_mnist(train=False) if fashion else None)
    channels = 1 if fashion and args.backbone in ("simple_cnn", "mlp") else 3
    result = tlcore.train_budget(source, args.budget, arch=args.backbone, weights=args.weights, test=test,
                                 val_split=args.val_split, seed=args.seed,
                                 keep=DEFAULT_KEEP if args.keep is None else args.keep, channels=channels,
                                 amp=args.amp or "auto", flip=args.flip)
    learner, plan = result.learner, result.plan
    stem = f"{args.backbone}__{learner.data.name or FASHION}__img{plan.image_size}__budget{plan.budget_s:.0f}s"
    model_path = learner.save(Path(args.out) / f"{stem}.tlc")
    learner.write_report(args.out, stem, split="test")
    print(result.summary())
    log.info("model %s", model_path)
    return 0


def _compare(args: argparse.Namespace) -> int:
    import time

    import tlcore
    from tlcore import plots

    backbones = [b.strip() for b in (args.backbones or "").split(",") if b.strip()]
    if not backbones:
        raise CliError("compare: give --backbones (e.g. resnet18,mobilenet_v2), or backbones: in --config")
    rows = []
    for backbone in backbones:
        args.backbone = backbone
        data_name, data = _open_data(args)
        weights = _weights_for(backbone, args.weights)
        learner = tlcore.Learner(backbone, data, weights=weights, verbose=False, seed=args.seed,
                                 device=args.device, amp=args.amp or "off", **_head_options(args))
        start = time.perf_counter()
        _run_recipe(learner, args)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        report = learner.evaluate()
        infer_s = time.perf_counter() - start
        params = learner.model.parameter_count
        rows.append({"backbone": backbone, "accuracy": report.accuracy, "macro_f1": report.macro["f1"],
                     "parameters": params, "acc_per_mparam": report.accuracy / (params / 1e6),
                     "train_s": train_s, "inference_img_s": len(data.val) / infer_s})
        log.info("%s: accuracy %.4f, %d parameters, %.1f s", backbone, report.accuracy, params, train_s)
    out = Path(args.out)
    stem = f"compare__{data_name}__img{data.image_size}__bs{data.batch_size}__ep{args.epochs}"
    table = ["| backbone | accuracy | macro F1 | parameters | acc / M params | train s | inference img/s |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['backbone']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['parameters']:,} | "
              f"{r['acc_per_mparam']:.4f} | {r['train_s']:.1f} | {r['inference_img_s']:.1f} |" for r in rows]
    from tlcore.files import atomic_write_bytes

    atomic_write_bytes(out / f"{stem}.md", ("\n".join(table) + "\n").encode())
    atomic_write_bytes(out / f"{stem}.json", json.dumps(rows, indent=2).encode())
    chart = plots.comparison(rows, out / f"{stem}.png")
    print("\n".join(table))
    log.info("table %s\nchart %s", out / f"{stem}.md", chart)
    return 0


def _weights_for(arch: str, weights: Optional[str]) -> Optional[str]:
    """compare's weights for ``arch``: "imagenet" only where such weights exist (a CNN or MLP
    from scratch is compared with the pretrained ones); "" means none."""
    from tlcore.weights import available

    if weights == "imagenet" and not any(w.tag == "imagenet" for w in available(arch)):
        log.info("%s: no ImageNet weights, trained from scratch", arch)
        return None
    return weights or None


def _lr_find(args: argparse.Namespace) -> int:
    """The LR range test on the phase to come: the head (pretrained weights) or the last blocks."""
    import tlcore

    args.valid = args.test = None
    data_name, data = _open_data(args)
    args.weights = args.weights or None
    learner = tlcore.Learner(args.backbone, data, weights=args.weights, verbose=False, seed=args.seed,
                             **_head_options(args))
    options = {}
    if args.weights and args.unfreeze is None:
        learner.model.freeze_backbone()
        options["cache_features"] = True  # as fit_head trains: the embeddings once, then the head
    elif args.unfreeze is not None:
        learner.model.freeze_backbone()
        learner.model.unfreeze_last(len(learner.model.blocks) if args.unfreeze == "all" else int(args.unfreeze))
    found = learner.lr_find(args.start_lr, args.end_lr, args.num_iter, **options)
    stem = f"{args.backbone}__{data_name}__img{data.image_size}__lr_find"
    plot = found.plot(Path(args.out) / f"{stem}.png")
    print(f"suggested learning rate: {found.suggestion:.2e} (the smoothed loss was lowest at "
          f"{found.lowest_loss_lr:.2e}; {len(found.losses)} batches)")
    log.info("plot %s", plot)
    return 0


def _export(args: argparse.Namespace) -> int:
    import tlcore

    path = tlcore.export(args.model, args.out, format=args.format, opset=args.opset)
    log.info("wrote %s (%s)", path, args.format)
    return 0


class CliError(Exception):
    """A problem the user can fix, its message already ``<file>: <problem>``."""


def _user_errors() -> Tuple[type, ...]:
    """What a user can fix. tlcore's C++ errors arrive as built-in types (bindings/module.cpp):
    NotFound as FileNotFoundError, InvalidArgument and FormatError as ValueError."""
    from tlcore.weights import WeightsError  # offline, or a download that failed its checksum

    return OSError, ValueError, WeightsError, CliError


def _one_line(error: BaseException) -> str:
    """The error's message on one line; an OSError's str() puts its errno first and its file last."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _about(path: Union[str, Path], error: BaseException) -> str:
    """``<path>: <problem>``: the message, with the path put first when it does not name it."""
    text = _one_line(error)
    return text if str(path) in text else f"{path}: {text}"


@contextlib.contextmanager
def _naming(path: Union[str, Path]) -> Iterator[None]:
    """User errors raised inside come out as CliErrors that name ``path``."""
    try:
        yield
    except CliError:
        raise
    except (OSError, ValueError) as e:
        raise CliError(_about(path, e)) from e


def _say_error(problem: str) -> None:
    # print, not logging: this line's form is a contract with scripts, whatever logging prints.
    print(f"tlcore: error: {problem}", file=sys.stderr)


def _load_model(path: str):
    """``tlcore.load(path)``, every error naming the file."""
    import tlcore

    if Path(path).is_dir():
        raise CliError(f"{path}: a folder, not a tlcore model file")
    with _naming(path):
        return tlcore.load(path)


def _evaluate(args: argparse.Namespace) -> int:
    clf = _load_model(args.model)
    clf.precision = args.precision
    with _naming(args.data):
        report = clf.evaluate(args.data, batch_size=args.batch_size, tta=args.tta, skip_corrupt=args.skip_corrupt,
                              threshold=args.threshold, min_energy=args.min_energy)
    skipped = report.extra.get("skipped_corrupt", [])
    for source in skipped:
        print(f"tlcore: warning: {source}: skipped, not a readable image", file=sys.stderr)
    if args.skip_corrupt:
        log.info("skipped %d corrupt image(s); evaluated %d", len(skipped), report.num_samples)
    print(report.to_markdown())
    if args.out:
        report.save(Path(args.out))
    return 0


# Images per batched call: well under the engine's queue bound (256) even when --tta doubles it.
PREDICT_BATCH = 64
GLOB_CHARS = "*?["


def _images_in(text: str) -> Tuple[List[Path], Optional[str]]:
    """The images one input names, or why it names none.

    A file is taken as given; folders (recursively) and globs give their image files only.
    """
    from tlcore.data import has_image_extension

    def in_folder(folder: Path) -> List[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file() and has_image_extension(p.name))

    path = Path(text)
    if path.is_file():
        return [path], None
    if path.is_dir():
        found = in_folder(path)
        return found, None if found else f"{text}: no images in this folder (.jpg .jpeg .png .bmp .webp)"
    if any(c in text for c in GLOB_CHARS):
        # Expanded here, so that a quoted glob works as well as one the shell expanded.
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        found = [p for m in matches for p in (in_folder(m) if m.is_dir() else [m]) if has_image_extension(p.name)]
        return found, None if found else f"{text}: no images match"
    return [], f"{text}: no such file or folder"


def _image_paths(inputs: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Every image the inputs name, once, in order; and a problem for each input naming none."""
    paths, problems = [], []
    for text in inputs:
        found, problem = _images_in(text)
        paths += found
        problems += [problem] if problem else []
    return list(dict.fromkeys(paths)), problems


def _answers(clf: "tlcore.Classifier", paths: Sequence[Path],
             args: argparse.Namespace) -> List[Union[Dict[str, object], str]]:
    """One answer per image, in one batched call; a bad image's entry is its one-line problem."""
    options = dict(top_k=args.top_k or 5, threshold=args.threshold, min_energy=args.min_energy, tta=args.tta)
    try:
        return clf.predict_many(paths, **options)
    except (OSError, ValueError):
        pass  # some image of the batch is bad: one call each finds which
    answers: List[Union[Dict[str, object], str]] = []
    for path in paths:
        try:
            answers.append(clf.predict(path, **options))
        except (OSError, ValueError) as e:
            answers.append(_about(path, e))
    return answers


class _Table:
    """The people's view of predictions, aligned as the rows come: widths are known up front."""

    def __init__(self, paths: Sequence[Path], classes: Sequence[str], top_k: Optional[int]) -> None:
        self.image_width = max(len("image"), *(len(str(p)) for p in paths))
        self.label_width = max(len("prediction"), *(len(f"unknown ({c}?)") for c in classes))
        self.top_k = top_k
        self.header_shown = False  # shown above the first answer: no header over nothing but errors

    def __call__(self, path: Path, answer: Dict[str, object]) -> None:
        if not self.header_shown:
            extra = f"  top {self.top_k}" if self.top_k else ""
            print(f"{'image':<{self.image_width}}  {'prediction':<{self.label_width}}  confidence{extra}")
            self.header_shown = True
        best = answer["top_k"][0]["label"]
        label = f"unknown ({best}?)" if answer["unknown"] else answer["prediction"]
        row = f"{str(path):<{self.image_width}}  {label:<{self.label_width}}  {answer['confidence']:>10.3f}"
        if self.top_k:
            row += "  " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in answer["top_k"])
        print(row)


def _json_line(path: Path, answer: Dict[str, object]) -> None:
    print(json.dumps({"image": str(path), **answer}))


def _predict(args: argparse.Namespace) -> int:
    """Answers every readable image; each bad one is an error line; status 2 if any failed."""
    clf = _load_model(args.model)
    clf.precision = args.precision
    paths, problems = _image_paths(args.images)
    for problem in problems:
        _say_error(problem)
    if not paths:
        return 2
    show = _json_line if args.json else _Table(paths, clf.classes, args.top_k)
    failed = len(problems)
    for start in range(0, len(paths), PREDICT_BATCH):
        chunk = paths[start:start + PREDICT_BATCH]
        for path, answer in zip(chunk, _answers(clf, chunk, args)):
            if isinstance(answer, str):
                _say_error(answer)
                failed += 1
            else:
                show(path, answer)
    return 2 if failed else 0


def _quantize(args: argparse.Namespace) -> int:
    """Calibrates a saved model for int8 on its training images and saves it with the calibration."""
    import tlcore

    clf = _load_model(args.model)
    with _naming(args.data):
        tlcore.quantize(clf, args.data, images=args.images, seed=args.seed)
    out = Path(args.out or args.model)
    with _naming(str(out)):
        clf.save(out)
    agreement = clf.spec.int8.agreement
    print(f"{out}: calibrated for int8 ({len(clf.spec.int8.scales)} activation scales); top-1 agreement "
          f"with fp32 {100 * agreement:.2f}% on held-out calibration images; this CPU: "
          f"{tlcore.precision.cpu_features()}")
    if agreement < tlcore.precision.MIN_AGREEMENT:
        log.warning("agreement below %.0f%%: --precision auto will not choose int8 for this model",
                    100 * tlcore.precision.MIN_AGREEMENT)
    return 0


def _info(args: argparse.Namespace) -> int:
    """The model card of a saved model, or with --json its whole spec."""
    clf = _load_model(args.model)
    spec = json.loads(clf.spec.to_json())
    if args.json:
        print(json.dumps(spec, indent=2))
    else:
        print("\n".join(_model_card(args.model, spec, clf.model.parameter_count)))
    return 0


def _model_card(path: str, spec: Dict[str, object], parameters: int) -> List[str]:
    """The spec for people: what the model is, what it expects, how it was made."""
    pipeline, head, made = spec["pipeline"], spec["head"], spec["provenance"]
    ops = [_fields(op["op"], {k: v for k, v in op.items() if k != "op"}) for op in pipeline["ops"]]
    ops.append(_fields("normalize x/255", {"mean": pipeline["mean"], "std": pipeline["std"]}))
    history = spec["history"][-1] if spec["history"] else {}
    return [
        f"model         {path}",
        f"architecture  {spec['arch']}, {parameters:,} parameters, initial weights: {spec['weights'] or 'random'}",
        f"classes       {len(spec['classes'])}: {', '.join(spec['classes'])}",
        f"head          {_fields(head['kind'], {k: v for k, v in head.items() if k != 'kind'})}",
        f"input         {pipeline['height']}x{pipeline['width']}, {pipeline['channels']} channel(s)",
        "preprocessing (evaluation, in order)",
        *[f"  {i}. {op}" for i, op in enumerate(ops, 1)],
        f"unknown       {_unknown_rule(spec)}",
        f"temperature   {spec['temperature']:g}",
        f"int8          {_int8_line(spec.get('int8'))}",
        f"metrics       {_fields('', spec['metrics']) or 'none recorded'}",
        "training",
        *[f"  {_fields(phase['phase'] + ':', phase, RECIPE_SUMMARY)}" for phase in spec["recipe"]],
        f"  {len(spec['history'])} epoch(s); last: {_fields('', history, HISTORY_SUMMARY) or '-'}",
        f"provenance    tlcore {made['tlcore_version']}, created {made['created']}, "
        f"data {made['data_source'] or 'unnamed'}, {made['data_size']:,} images",
    ]


def _int8_line(int8: Optional[Dict[str, object]]) -> str:
    """The card's int8 line: the calibration, or how to make one."""
    if not int8:
        return "not calibrated (`tlcore quantize MODEL --data DIR`)"
    agreement = int8["agreement"]
    checked = f"top-1 agreement with fp32 {100 * agreement:.1f}%" if agreement >= 0 else "agreement not measured"
    return f"calibrated at {int8['image_size']} px, {len(int8['scales'])} activation scales, {checked}"


# What the card shows of each training phase's options and of the last epoch.
RECIPE_SUMMARY = ("epochs", "lr", "optimizer", "schedule", "weight_decay", "label_smoothing", "augment",
                  "trainable_parameters")
HISTORY_SUMMARY = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1")


def _fields(name: str, values: Dict[str, object], keys: Optional[Sequence[str]] = None) -> str:
    """``name k=v k=v``: the scalars and lists of ``values`` (only ``keys``, if given)."""
    def text(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(text(x) for x in v) + "]"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    shown = [k for k in (keys or values) if k in values and not isinstance(values[k], dict)]
    return " ".join(([name] if name else []) + [f"{k}={text(values[k])}" for k in shown])


def _model_row(arch: str) -> Dict[str, object]:
    """One architecture's facts; its model (over 0.5 GB for a VGG) is freed on return."""
    import tlcore
    from tlcore import weights

    model = tlcore.create_model(arch, 1000)
    return {"arch": arch, "parameters": model.parameter_count, "input_size": model.preprocess["input_size"],
            "weights": [w.tag for w in weights.available(arch)]}


def _shard(args: argparse.Namespace) -> int:
    """Writes a dataset as tar shards for reading in place (tlcore.write_shards)."""
    import tlcore

    paths = tlcore.write_shards(args.source, args.out, shard_size=args.shard_size,
                                progress=not args.quiet)
    print(f"{args.out}: {len(paths)} shards")
    return 0


def _models(args: argparse.Namespace) -> int:
    """Architectures with their parameters (1000 classes), input size and registered weights."""
    import tlcore

    known = tlcore.model_names()
    for name in args.names:
        if name not in known:
            raise CliError(f"{name}: not an architecture tlcore knows (`tlcore models` lists them)")
    names = args.names or known
    width = max(len("architecture"), *map(len, names))
    if not args.json:
        print(f"{'architecture':<{width}}  {'parameters':>12}  input  weights")
    for name in names:  # a row as soon as it is known: the VGGs take seconds each
        row = _model_row(name)
        print(json.dumps(row) if args.json else
              f"{name:<{width}}  {row['parameters']:>12,}  {row['input_size']:>5}  {', '.join(row['weights']) or '-'}")
    return 0


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def _float_in(text: str, ok: Callable[[float], bool], expected: str) -> float:
    """``text`` as a number for which ``ok`` holds (NaN never does), else argparse's error."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
    return value


def _positive_seconds(text: str) -> float:
    """argparse type: a number of seconds above 0."""
    return _float_in(text, lambda v: 0.0 < v < float("inf"), "a number of seconds above 0")


def _probability(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    return _float_in(text, lambda v: 0.0 <= v <= 1.0, "a number from 0 to 1")


def _finite(text: str) -> float:
    """argparse type: a finite number."""
    return _float_in(text, math.isfinite, "a finite number")


def _add_unknown_options(parser: argparse.ArgumentParser, scope: str) -> None:
    """--threshold and --min-energy: either replaces the model's "unknown" rule."""
    parser.add_argument("--threshold", type=_probability, default=None,
                        help=f"call 'unknown' a prediction less confident than this{scope}; with --min-energy "
                             "or alone, replaces the model's own rule (see 'tlcore info')")
    parser.add_argument("--min-energy", type=_finite, default=None,
                        help=f"call 'unknown' an image whose energy (logsumexp of the logits) is below this{scope}; "
                             "calibration sets such a floor")


def _unknown_rule(spec: Dict[str, object]) -> str:
    from .calibration import describe_rule

    rule = describe_rule(spec["threshold"], spec.get("min_energy"))
    return "never (no rule: calibration sets one)" if rule == "never" else f"when {rule}"


def _add_precision_option(parser: argparse.ArgumentParser, default: Optional[str] = "fp32") -> None:
    from .precision import PRECISIONS

    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="compute in fp32, bf16 or int8 (a model calibrated by `tlcore quantize`); auto: "
                             "the fastest this CPU runs well (default fp32)")


def _add_evaluate_parser(sub: "argparse._SubParsersAction") -> None:
    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on a labelled folder/archive")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--batch-size", type=_positive_int, default=64)
    evaluate.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    evaluate.add_argument("--skip-corrupt", action="store_true",
                          help="leave out images that cannot be decoded (each named on stderr) instead of stopping")
    _add_unknown_options(evaluate, " (the report gives the share called 'unknown' and the accuracy on the rest)")
    _add_precision_option(evaluate)
    evaluate.add_argument("--out", default=None)
    evaluate.set_defaults(run=_evaluate)


def _add_inspect_parsers(sub: "argparse._SubParsersAction") -> None:
    """predict, info and models: using and inspecting models, no training."""
    predict = sub.add_parser("predict", help="predict labels of images: files, folders or globs",
                             description="Goes on past unreadable images: each is an error line on stderr, "
                                         "and the status is 2 at the end if any failed.")
    predict.add_argument("--model", required=True)
    predict.add_argument("images", nargs="+",
                         help="image files, folders (searched recursively) or globs such as 'photos/**/*.jpg'")
    predict.add_argument("--json", action="store_true", help="one JSON object per line: image, prediction, "
                                                             "confidence, energy, unknown, top_k")
    predict.add_argument("--top-k", type=_positive_int, default=None,
                         help="labels per image: a column of the table (default none), --json's top_k (default 5)")
    _add_unknown_options(predict, "")
    predict.add_argument("--tta", action="store_true", help="average with the mirrored image")
    _add_precision_option(predict)
    predict.set_defaults(run=_predict)

    quantize = sub.add_parser("quantize", help="calibrate a saved model for int8 inference on its training images")
    quantize.add_argument("model", help="a .tlc file")
    quantize.add_argument("--data", required=True, help="its training images (folder, archive, ...)")
    quantize.add_argument("--images", type=_positive_int, default=512,
                          help="images sampled: half calibrate, half check agreement with fp32 (default 512)")
    quantize.add_argument("--seed", type=int, default=0)
    quantize.add_argument("--out", default=None, help="where to save (default: overwrite MODEL)")
    quantize.set_defaults(run=_quantize)

    info = sub.add_parser("info", help="a saved model's card: classes, preprocessing, recipe, provenance")
    info.add_argument("model", help="a .tlc file")
    info.add_argument("--json", action="store_true", help="the model file's whole spec as JSON")
    info.set_defaults(run=_info)

    shard = sub.add_parser("shard", help="write a dataset (folder, archive, CIFAR, IDX, TFRecords) as tar "
                                         "shards, indexed, for data larger than memory")
    shard.add_argument("source", help="anything tlcore reads: folder, archive, CIFAR, IDX, TFRecords")
    shard.add_argument("out", help="an empty folder for shard-NNNNNN.tar and classes.txt")
    shard.add_argument("--shard-size", default="1GB", help="most bytes per shard, e.g. 1GB or 256MiB (default 1GB)")
    shard.add_argument("--quiet", action="store_true", help="no progress bar")
    shard.set_defaults(run=_shard)

    models = sub.add_parser("models", help="architectures: parameters, input size, pretrained weights")
    models.add_argument("names", nargs="*", help="architectures to show (default: all)")
    models.add_argument("--json", action="store_true", help="one JSON object per line")
    models.set_defaults(run=_models)


def _run(args: argparse.Namespace) -> int:
    """The subcommand; a user's error becomes one line and status 2, a bug one line, a hint and 1."""
    debug = args.debug or os.environ.get("TLCORE_DEBUG", "") not in ("", "0")
    try:
        if getattr(args, "config", None):
            from tlcore import run_config

            args = run_config.apply(args)
        return args.run(args)
    except BrokenPipeError:
        # The reader left (`tlcore predict ... | head`): stop quietly, as cat does. stdout goes to
        # devnull so that Python's flush at exit does not complain a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("tlcore: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        return _fail(2, [f"tlcore: error: {_one_line(e)}"], debug)
    except Exception as e:  # anything else is tlcore's bug, not the user's
        return _fail(1, [f"tlcore: internal error: {type(e).__name__}: {_one_line(e)}",
                         "tlcore: re-run with --debug (or TLCORE_DEBUG=1) to see the traceback"], debug)


def _fail(status: int, lines: List[str], debug: bool) -> int:
    """Says what went wrong (the traceback under --debug); called inside the except block."""
    if debug:
        traceback.print_exc()
    else:
        print("\n".join(lines), file=sys.stderr)
    return status


def _create_app():
    """tlcore.api.app.create_app: the service ships inside the package (it needs tlcore[serve])."""
    try:
        from tlcore.api.app import create_app
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith("tlcore"):
            raise SystemExit(f"tlcore serve needs FastAPI and uvicorn: pip install 'tlcore[serve]' ({e})") from e
        raise
    return create_app


def _serve(args: argparse.Namespace) -> int:
    create_app = _create_app()
    import uvicorn

    from tlcore.api.header_deadline import header_deadline

    app = create_app(args.models, default_model=args.default_model, max_upload_mb=args.max_upload_mb,
                     max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
                     max_pixels=args.max_pixels, threshold=args.threshold, min_energy=args.min_energy,
                     precision=args.precision)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                http=header_deadline(args.header_timeout))
    return 0


def _add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """Data and training options shared by train and compare."""
    parser.add_argument("--data", default=FASHION,
                        help=f"folder of class folders, tar archive, CIFAR/IDX file, or '{FASHION}' (default)")
    parser.add_argument("--weights", default=None, help="'imagenet' or a state-dict path (default: random init)")
    parser.add_argument("--epochs", type=int, default=2, help="head epochs with --weights, else all epochs")
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--unfreeze", default="3", help="blocks to fine-tune, or 'all'")
    parser.add_argument("--progressive", action="store_true",
                        help="unfreeze the blocks gradually over the fine-tuning epochs (ULMFiT)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=0, help="default 28 for Fashion-MNIST, else 224")
    parser.add_argument("--val-split", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=0, help="use at most this many training images")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--amp", default=None, choices=["off", "bf16", "fp16"],
                        help="mixed precision (fp16 on CUDA only); default off, or with --budget bf16 "
                             "where the hardware has it")
    parser.add_argument("--valid", default=None,
                        help="a separate labelled folder/archive to validate on (instead of --val-split)")
    parser.add_argument("--test", default=None,
                        help="a separate labelled folder/archive, evaluated once at the end and reported apart")
    parser.add_argument("--augment", default=None,
                        help="a preset (imagenet-train, cifar-train) or Keras-style augmentations on the eval "
                             "resize: flip, rotate=F (angle within ±F x 360 degrees), zoom=F (scale in "
                             "[1-F, 1+F]), contrast=F (factor in [1-F, 1+F]), translate=F (shift up to "
                             "F x the side); e.g. flip,rotate=0.2,zoom=0.2,contrast=0.1")
    parser.add_argument("--head", default="linear", choices=list(_HEADS),
                        help="linear, dropout (dropout then linear) or mlp (hidden layers from --hidden)")
    parser.add_argument("--dropout", type=float, default=0.2, help="the head's dropout (dropout and mlp heads)")
    parser.add_argument("--hidden", type=_ints, default=None, metavar="N,N,...",
                        help="the mlp head's hidden widths, e.g. 256,128")
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="options from a YAML file (keys as the flags without --, e.g. finetune_epochs: 5); "
                             "the command line overrides it. train writes its effective one beside the model")
    _add_fit_options(parser)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `tlcore` console command: the status to exit with.

    Usage: ``sys.exit(main(["predict", "--model", "runs/model.tlc", "photo.jpg"]))``
    """
    parser = argparse.ArgumentParser(prog="tlcore", description="Transfer learning with a fast C++ core.")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback (or set TLCORE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, evaluate, save and try a model")
    _add_recipe_options(train)
    train.add_argument("--backbone", default="simple_cnn")
    train.add_argument("--resume", action="store_true", help="checkpoint every epoch and resume")
    train.add_argument("--budget", default=None,
                       help="e.g. 10m, 30m, 2h: tlcore plans size, epochs and fine-tuning to fit this time "
                            "(the epoch and learning-rate flags are then ignored)")
    train.add_argument("--keep", type=float, default=None,
                       help="with --budget: the share of correctly classified validation images the "
                            "'unknown' rule keeps (default 0.98)")
    train.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                       help="with --budget: whether a mirror image shows the same class; --no-flip for "
                            "digits or text: nothing trains on mirror images and there is no flip TTA")
    train.add_argument("--out", default="runs")
    train.add_argument("--nproc", type=int, default=1,
                       help="data-parallel ranks on this machine (torch.distributed: Gloo, NCCL on CUDA); each "
                            "gets the batch size and an equal share of the cores")
    train.set_defaults(run=_train, command_parser=train)

    _add_evaluate_parser(sub)

    compare = sub.add_parser("compare", help="train several backbones under the same budget and compare")
    compare.add_argument("--backbones", default=None,
                         help="comma-separated, e.g. resnet18,mobilenet_v2 (required, here or in --config)")
    _add_recipe_options(compare)
    compare.add_argument("--out", default="runs/compare")
    compare.set_defaults(run=_compare, command_parser=compare)

    lr_find = sub.add_parser("lr-find", help="fastai's learning-rate finder: the loss as the rate grows, "
                                             "and a suggested rate",
                             description="Trains a few hundred batches while the rate grows exponentially, "
                                         "restores the weights, plots the loss and suggests a rate a tenth of "
                                         "the one where the smoothed loss was lowest.")
    lr_find.add_argument("--data", default=FASHION)
    lr_find.add_argument("--backbone", default="simple_cnn")
    lr_find.add_argument("--weights", default=None, help="'imagenet' or a state-dict path (then the head is swept)")
    lr_find.add_argument("--unfreeze", default=None,
                         help="sweep for fine-tuning these last blocks (or 'all') instead of the head")
    lr_find.add_argument("--img-size", type=int, default=0)
    lr_find.add_argument("--batch-size", type=int, default=32)
    lr_find.add_argument("--val-split", type=float, default=0.2)
    lr_find.add_argument("--limit", type=int, default=0)
    lr_find.add_argument("--seed", type=int, default=42)
    lr_find.add_argument("--augment", default=None)
    lr_find.add_argument("--head", default="linear", choices=list(_HEADS))
    lr_find.add_argument("--dropout", type=float, default=0.2)
    lr_find.add_argument("--hidden", type=_ints, default=None)
    lr_find.add_argument("--start-lr", type=float, default=1e-7)
    lr_find.add_argument("--end-lr", type=float, default=10.0)
    lr_find.add_argument("--num-iter", type=_positive_int, default=100, help="batches in the sweep (about)")
    lr_find.add_argument("--out", default="runs")
    lr_find.set_defaults(run=_lr_find)

    export = sub.add_parser("export", help="export a saved model to TorchScript or ONNX")
    export.add_argument("--model", required=True, help="a .tlc file written by train or Learner.save")
    export.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    export.add_argument("--opset", type=int, default=13, help="ONNX opset (>= 13)")
    export.add_argument("--out", required=True, help="output file (.pt or .onnx)")
    export.set_defaults(run=_export)

    _add_inspect_parsers(sub)

    serve = sub.add_parser("serve", help="serve every saved model of a folder over HTTP (FastAPI)",
                           description="POST /predict/, /predict/batch; GET /models, /health, /docs and a "
                                       "camera page at /. Options left out come from the TLCORE_* "
                                       "environment variables (see tlcore/api/app.py), then the defaults.")
    serve.add_argument("--models", default=None, help="folder of *.tlc model files (default: $TLCORE_MODELS)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--default-model", default=None, help="model used when a request names none "
                                                             "(default: the first by name)")
    serve.add_argument("--max-upload-mb", type=float, default=None, help="request body limit in MiB (default 10)")
    serve.add_argument("--max-batch", type=int, default=None, help="largest batch (default 16)")
    serve.add_argument("--max-delay-ms", type=float, default=None,
                       help="longest wait for a batch to fill (default 5)")
    serve.add_argument("--max-queue", type=int, default=None,
                       help="requests waiting per model before 503 (default 256)")
    serve.add_argument("--max-pixels", type=int, default=None,
                       help="largest image accepted, in pixels, read from its header (default 40000000)")
    _add_unknown_options(serve, ", for every model")
    _add_precision_option(serve, default=None)
    serve.add_argument("--header-timeout", type=_positive_seconds, default=10.0,
                       help="seconds a request's headers may take to arrive: slower gets 408 (default 10)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(run=_serve)

    for command in sub.choices.values():  # `tlcore predict ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv, args.parser = argv, parser
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Before any model runs. `serve` leaves it to the service's create_app, which also reads
    # TLCORE_PRECISION and runs under uvicorn without this CLI.
    if args.command == "quantize" or (args.command != "serve" and getattr(args, "precision", None) == "int8"):
        from tlcore.precision import run_int8_without_amx

        run_int8_without_amx()
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
