"""The `tlcore` command: train, evaluate, predict.

Usage::

    tlcore train                                   # Fashion-MNIST from Debian, simple CNN
    tlcore train --data flowers/ --backbone resnet50 --weights imagenet --epochs 5 \\
                 --finetune-epochs 5 --batch-size 32 --img-size 224 --out runs/
    tlcore evaluate --model runs/model.tlc --data test/
    tlcore predict --model runs/model.tlc photo.jpg
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

log = logging.getLogger("tlcore")

FASHION = "fashion-mnist"


def _open_data(args: argparse.Namespace):
    import tlcore

    if args.data == FASHION:
        size = args.img_size or 28
        kwargs = dict(train_transform="cifar-train" if size <= 64 else "imagenet-train",
                      eval_transform="cifar-eval" if size <= 64 else "imagenet-eval")
        train = tlcore.fashion_mnist(train=True)
        test = tlcore.fashion_mnist(train=False)
        if args.limit:
            train = tlcore._core.Subset(train, tlcore.per_class_subset(train.labels(), args.limit // 10, args.seed))
        channels = 1 if args.backbone in ("simple_cnn", "mlp") else 3
        return "fashion-mnist", tlcore.ImageData(train, valid=test, seed=args.seed, image_size=size,
                                                 batch_size=args.batch_size, channels=channels, **kwargs)
    size = args.img_size or 224
    small = size <= 64
    name = Path(args.data.rstrip("/")).name.split(".")[0]
    return name, tlcore.ImageData(args.data, val_split=args.val_split, seed=args.seed, image_size=size,
                                  batch_size=args.batch_size,
                                  train_transform="cifar-train" if small else "imagenet-train",
                                  eval_transform="cifar-eval" if small else "imagenet-eval",
                                  per_class=args.limit // 10 if args.limit else None)


def _train(args: argparse.Namespace) -> int:
    import tlcore
    from tlcore import plots

    data_name, data = _open_data(args)
    log.info("%s: %r", data_name, data)
    learner = tlcore.Learner(args.backbone, data, weights=args.weights,
                             checkpoint_dir=Path(args.out) / "checkpoints" if args.resume else None)
    log.info("%s: %d parameters", args.backbone, learner.model.parameter_count)
    if args.weights:
        learner.fit_head(args.epochs, lr=args.lr)
        if args.finetune_epochs:
            learner.fine_tune(args.finetune_epochs, lr=args.finetune_lr, unfreeze=args.unfreeze)
    else:
        learner.fit(args.epochs, lr=args.lr, schedule="cosine")
    stem = f"{args.backbone}__{data_name}__img{data.image_size}__bs{data.batch_size}__ep{args.epochs}"
    out = Path(args.out)
    report = learner.evaluate()
    model_path = learner.save(out / f"{stem}.tlc")
    paths = report.save(out, prefix=f"{stem}_")
    curves = plots.curves(learner.history, out / f"{stem}_curves.png")
    (out / f"{stem}_history.json").write_text(json.dumps(learner.history, indent=2))
    probs, labels, indices = learner.predictions("val")
    pick = list(range(min(18, len(indices))))
    images = [data.val.image(int(indices[i]), channels=data.channels) for i in pick]
    conf, pred = probs.max(1)
    grid = plots.prediction_grid(images, labels[pick].tolist(), pred[pick].tolist(), conf[pick].tolist(),
                                 data.classes, out / f"{stem}_predictions.png")
    clf = tlcore.load(model_path)
    sample = data.val.image(int(indices[0]), channels=data.channels)
    answer = clf.predict(sample)
    print(report.to_markdown())
    log.info("prediction for %s: %s (%.2f); true %s", data.val.source(int(indices[0])),
             answer["prediction"], answer["confidence"], data.classes[int(labels[0])])
    log.info("model %s\nreport %s, %s\nplots %s, %s, %s", model_path, paths["json"], paths["markdown"],
             curves, paths["confusion"], grid)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import tlcore

    clf = tlcore.load(args.model)
    ds = tlcore.open_dataset(args.data)
    if list(ds.classes) != clf.classes:
        raise SystemExit(f"{args.data}: classes {list(ds.classes)} differ from the model's {clf.classes}")
    loader = tlcore.DataLoader(ds, clf.pipeline, batch_size=args.batch_size, shuffle=False)
    logits, labels, _, _ = tlcore._core.predict(clf.model, loader._loader, True, args.tta)
    import torch

    report = tlcore.Report.from_predictions(labels.tolist(), torch.softmax(logits, 1), clf.classes)
    print(report.to_markdown())
    if args.out:
        report.save(Path(args.out))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import tlcore

    clf = tlcore.load(args.model)
    for image in args.images:
        r = clf.predict(image, top_k=args.top_k)
        print(json.dumps({"image": image, **r}))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `tlcore` console command."""
    parser = argparse.ArgumentParser(prog="tlcore", description="Transfer learning with a fast C++ core.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, evaluate, save and try a model")
    train.add_argument("--data", default=FASHION,
                       help=f"folder of class folders, tar archive, CIFAR/IDX file, or '{FASHION}' (default)")
    train.add_argument("--backbone", default="simple_cnn")
    train.add_argument("--weights", default=None, help="'imagenet' or a state-dict path (default: random init)")
    train.add_argument("--epochs", type=int, default=2, help="head epochs with --weights, else all epochs")
    train.add_argument("--finetune-epochs", type=int, default=0)
    train.add_argument("--unfreeze", default="3", help="blocks to fine-tune, or 'all'")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--finetune-lr", type=float, default=1e-4)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--img-size", type=int, default=0, help="default 28 for Fashion-MNIST, else 224")
    train.add_argument("--val-split", type=float, default=0.2)
    train.add_argument("--limit", type=int, default=0, help="use at most this many training images")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--resume", action="store_true", help="checkpoint every epoch and resume")
    train.add_argument("--out", default="runs")
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on a labelled folder/archive")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    evaluate.add_argument("--out", default=None)
    evaluate.set_defaults(run=_evaluate)

    predict = sub.add_parser("predict", help="predict labels of image files")
    predict.add_argument("--model", required=True)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("images", nargs="+")
    predict.set_defaults(run=_predict)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
