"""The `tlcore` command: train, evaluate, predict.

Usage::

    tlcore train                                   # Fashion-MNIST from Debian, simple CNN
    tlcore train --data flowers/ --backbone resnet50 --weights imagenet --epochs 5 \\
                 --finetune-epochs 5 --batch-size 32 --img-size 224 --out runs/
    tlcore evaluate --model runs/model.tlc --data test/
    tlcore predict --model runs/model.tlc photo.jpg
    tlcore compare --backbones simple_cnn,mlp --epochs 2 --out runs/compare
    tlcore export --model runs/model.tlc --format onnx --out model.onnx
    tlcore serve --models runs/ --host 0.0.0.0 --port 8000   # every runs/*.tlc over HTTP
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
            train = tlcore.Subset(train, tlcore.per_class_subset(train.labels(), args.limit // 10, args.seed))
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


def _run_recipe(learner, args: argparse.Namespace) -> None:
    """Pretrained weights: head, then optional fine-tuning. From scratch: every layer."""
    options = _fit_options_given(args)
    if args.weights:
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


def _add_fit_options(parser: argparse.ArgumentParser) -> None:
    """One flag per training option of tlcore.fit_options() (defined once, in C++)."""
    import tlcore

    group = parser.add_argument_group("training options (each fit phase; see tlcore.fit_options())")
    kinds = {"int": int, "float": float, "str": str, "floats": _floats}
    for name, kind, help_text in tlcore.fit_options():
        if name in _RECIPE_OWNED:
            continue
        flag, dest = "--" + name.replace("_", "-"), _FIT_DEST + name
        if kind == "bool":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag, dest=dest, type=kinds[kind], default=None, help=help_text,
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
    from tlcore import distributed

    if args.nproc > 1 and distributed.world_size() == 1:
        distributed.launch([sys.executable, "-m", "tlcore.cli", *_without_nproc(args.argv)], args.nproc)
        return 0
    if args.budget:
        return _train_budget(args)
    data_name, data = _open_data(args)
    log.info("%s: %r", data_name, data)
    learner = tlcore.Learner(args.backbone, data, weights=args.weights, device=args.device, amp=args.amp,
                             checkpoint_dir=Path(args.out) / "checkpoints" if args.resume else None)
    log.info("%s: %d parameters", args.backbone, learner.model.parameter_count)
    _run_recipe(learner, args)
    if not distributed.is_main_process():
        return 0  # rank 0 evaluates and writes
    stem = f"{args.backbone}__{data_name}__img{data.image_size}__bs{data.batch_size}__ep{args.epochs}"
    model_path = learner.save(Path(args.out) / f"{stem}.tlc")
    paths = learner.write_report(args.out, stem)
    print(paths["markdown"].read_text(encoding="utf-8"))
    # The saved file, loaded back, on one validation image: the model round-trips.
    answer = tlcore.load(model_path).predict(data.val.image(0, channels=data.channels))
    log.info("prediction for %s: %s (%.2f); true %s", data.val.source(0), answer["prediction"],
             answer["confidence"], data.classes[data.val.label(0)])
    log.info("model %s", model_path)
    return 0


def _train_budget(args: argparse.Namespace) -> int:
    """--budget: tlcore plans the recipe; the report is on images no choice saw."""
    import tlcore

    fashion = args.data == FASHION
    source = tlcore.fashion_mnist(train=True) if fashion else args.data
    test = args.test or (tlcore.fashion_mnist(train=False) if fashion else None)
    channels = 1 if fashion and args.backbone in ("simple_cnn", "mlp") else 3
    result = tlcore.train_budget(source, args.budget, arch=args.backbone, weights=args.weights, test=test,
                                 val_split=args.val_split, seed=args.seed, keep=args.keep, channels=channels)
    learner, plan = result.learner, result.plan
    name = FASHION if fashion else Path(args.data.rstrip("/")).name.split(".")[0]
    stem = f"{args.backbone}__{name}__img{plan.image_size}__budget{plan.budget_s:.0f}s"
    model_path = learner.save(Path(args.out) / f"{stem}.tlc")
    learner.write_report(args.out, stem, split="test")
    print(result.summary())
    log.info("model %s", model_path)
    return 0


def _compare(args: argparse.Namespace) -> int:
    import time

    import tlcore
    from tlcore import plots

    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    rows = []
    for backbone in backbones:
        args.backbone = backbone
        data_name, data = _open_data(args)
        learner = tlcore.Learner(backbone, data, weights=args.weights, verbose=False, seed=args.seed,
                                 device=args.device, amp=args.amp)
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


def _export(args: argparse.Namespace) -> int:
    import tlcore

    path = tlcore.export(args.model, args.out, format=args.format, opset=args.opset)
    log.info("wrote %s (%s)", path, args.format)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import tlcore

    report = tlcore.load(args.model).evaluate(args.data, batch_size=args.batch_size, tta=args.tta)
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

    app = create_app(args.models, default_model=args.default_model, max_upload_mb=args.max_upload_mb,
                     max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
                     max_pixels=args.max_pixels)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
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
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                        help="mixed precision (fp16 on CUDA only)")
    _add_fit_options(parser)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `tlcore` console command."""
    parser = argparse.ArgumentParser(prog="tlcore", description="Transfer learning with a fast C++ core.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, evaluate, save and try a model")
    _add_recipe_options(train)
    train.add_argument("--backbone", default="simple_cnn")
    train.add_argument("--resume", action="store_true", help="checkpoint every epoch and resume")
    train.add_argument("--budget", default=None,
                       help="e.g. 10m, 30m, 2h: tlcore plans size, epochs and fine-tuning to fit this time "
                            "(the epoch and learning-rate flags are then ignored)")
    train.add_argument("--test", default=None,
                       help="with --budget: a separate labelled folder/archive, evaluated once at the end "
                            "(default: half of the validation split, never used for a choice)")
    train.add_argument("--keep", type=float, default=0.95,
                       help="with --budget: the share of correctly classified validation images the "
                            "'unknown' threshold keeps")
    train.add_argument("--out", default="runs")
    train.add_argument("--nproc", type=int, default=1,
                       help="data-parallel ranks on this machine (torch.distributed: Gloo, NCCL on CUDA); each "
                            "gets the batch size and an equal share of the cores")
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved model on a labelled folder/archive")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--tta", action="store_true", help="average with horizontally flipped images")
    evaluate.add_argument("--out", default=None)
    evaluate.set_defaults(run=_evaluate)

    compare = sub.add_parser("compare", help="train several backbones under the same budget and compare")
    compare.add_argument("--backbones", required=True, help="comma-separated, e.g. resnet18,mobilenet_v2")
    _add_recipe_options(compare)
    compare.add_argument("--out", default="runs/compare")
    compare.set_defaults(run=_compare)

    export = sub.add_parser("export", help="export a saved model to TorchScript or ONNX")
    export.add_argument("--model", required=True, help="a .tlc file written by train or Learner.save")
    export.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    export.add_argument("--opset", type=int, default=13, help="ONNX opset (>= 13)")
    export.add_argument("--out", required=True, help="output file (.pt or .onnx)")
    export.set_defaults(run=_export)

    predict = sub.add_parser("predict", help="predict labels of image files")
    predict.add_argument("--model", required=True)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("images", nargs="+")
    predict.set_defaults(run=_predict)

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
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(run=_serve)

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
