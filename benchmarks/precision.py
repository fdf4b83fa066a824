"""Images/s of tlcore's fp32, bf16 and int8 inference, with top-1 agreement against fp32.

One run, the same threads; batch 32 at 224 px. For each model (mobilenet_v2 with the
shared ImageNet weights; resnet18 and resnet50 randomly initialised, as no weights for
them can be downloaded here) tlcore trains a 5-class flowers head on 400 flower photos,
so that agreement is measured on the decision a user's model makes. int8 is calibrated
(tlcore.precision.calibrate_int8) on those same photos; agreement with fp32 and accuracy
are measured on 500 others. Then a flowers model fine-tuned by tlcore.train_budget from the
shared MobileNetV2 is calibrated on its training images and evaluated on its untouched test
half in fp32, bf16 and int8 ("fine_tuned_flowers"). The baseline is torchvision's model with the same weights
under torch.jit.optimize_for_inference. Prints one JSON line: per model the images/s
and agreement, then "min_agreement" and, last, "ratio" (resnet50: best precision / fp32).

int8 runs in a child process that keeps oneDNN off AMX (tlcore.precision.run_int8_without_amx):
on a CPU with AMX, torch 1.13's oneDNN corrupts memory in AMX int8 convolutions, and the cap
would slow bf16 in this one. Elsewhere the cap does nothing, so every CPU runs the same way.
Each ratio is measured side by side in one process, the precisions taking turns in every round
(bf16 and torchvision against fp32 here, int8 against fp32 in the child, where fp32 runs as here:
it never uses AMX), so that a machine whose speed drifts, as a shared virtual machine's does,
still gives fair ratios; "fp32_img_s" is this process's.

Usage: .venv/bin/python benchmarks/precision.py [--repeats 5] [--models mobilenet_v2 ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

import tlcore

from _common import median_times, shared_dir

BATCH, SIZE, CLASSES = 32, 224, 5
FLOWERS_SPLIT = {"val_split": 0.2, "seed": 42}  # train_budget's split; half its validation is the test


def flower_batches(pipeline, first: int, count: int):
    """``count`` flower photos from a fixed, class-balanced order, starting at ``first``, as batches."""
    ds = tlcore.open_dataset(shared_dir() / "data" / "flowers" / "train")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[first:first + count].tolist()
    subset = tlcore.Subset(ds, order)
    batches = list(tlcore.DataLoader(subset, pipeline, batch_size=BATCH, shuffle=False))
    return subset, torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def trained_model(arch: str, images) -> "tlcore.Learner":
    """``arch`` with a 5-class head trained by tlcore on ``images`` (its defaults, 10 cached epochs)."""
    weights = shared_dir() / "weights" / "mobilenet_v2-imagenet-dequantized.pth" if arch == "mobilenet_v2" else None
    data = tlcore.ImageData(images, val_split=0, seed=0, image_size=SIZE, batch_size=BATCH)
    learner = tlcore.Learner(arch, data, weights=weights, verbose=False, seed=0)
    learner.fit_head(10, lr=1e-3)
    return learner


def images_per_second(runs: dict, x: torch.Tensor, repeats: int) -> dict:
    """Images/s of each of ``runs`` on the batch ``x``, measured in turns."""
    for run in runs.values():
        run(x)  # warm-up
    times = median_times({name: (lambda run=run: run(x)) for name, run in runs.items()}, repeats)
    return {name: BATCH / t for name, t in times.items()}


def in_int8_process(job: dict) -> dict:
    """Runs ``job`` (see ``int8_job``) in a child process that can run int8; returns its answer."""
    child = subprocess.run([sys.executable, __file__, "--int8-job", json.dumps(job)],
                           capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"the int8 process failed ({child.returncode}):\n{child.stderr[-4000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def int8_job(job: dict) -> dict:
    """In the child: calibrates the saved model for int8, then measures what ``job`` asks."""
    tlcore.set_num_threads(job["threads"])
    clf = tlcore.load(job["model"])
    if job["kind"] == "fine_tuned":
        data = tlcore.ImageData(job["source"], image_size=job["image_size"], test_split=0.5, **FLOWERS_SPLIT)
        tlcore.quantize(clf, data.train)
        clf.precision = "int8"
        return {"accuracy": clf.evaluate(data.test).accuracy, "agreement": clf.spec.int8.agreement,
                "ran_in": tlcore.precision.resolve("int8", clf.spec.int8)}
    pipeline = tlcore.Pipeline.preset("imagenet-eval", SIZE, 3)
    calibration, _, _ = flower_batches(pipeline, 0, 400)
    _, test_x, _ = flower_batches(pipeline, 400, 500)
    int8 = tlcore.precision.calibrate_int8(clf.model, calibration, pipeline, images=len(calibration))
    compiled = {p: clf.model.compile_for_inference(SIZE, precision=p, int8=int8) for p in ("fp32", "int8")}
    with torch.inference_mode():
        labels = torch.cat([compiled["int8"](b) for b in test_x.split(BATCH)]).argmax(1)
        speed = images_per_second(compiled, test_x[:BATCH].contiguous(), job["repeats"])
    return {"labels": labels.tolist(), "img_s": speed["int8"], "vs_fp32": speed["int8"] / speed["fp32"],
            "ran_in": compiled["int8"].precision}


def bench(arch: str, repeats: int, tmp: Path) -> dict:
    torch.manual_seed(0)
    pipeline = tlcore.Pipeline.preset("imagenet-eval", SIZE, 3)
    calibration, _, _ = flower_batches(pipeline, 0, 400)
    _, test_x, test_y = flower_batches(pipeline, 400, 500)
    learner = trained_model(arch, calibration)
    model = learner.model
    int8 = in_int8_process({"kind": "bench", "model": str(learner.save(tmp / f"{arch}.tlc")),
                            "repeats": repeats, "threads": tlcore.num_threads()})
    compiled = {p: model.compile_for_inference(SIZE, precision=p) for p in ("fp32", "bf16")}
    ref = getattr(torchvision.models, arch)(num_classes=CLASSES).eval()
    ref.load_state_dict(model.state_dict())
    with torch.inference_mode():
        baseline = torch.jit.optimize_for_inference(torch.jit.trace(ref, test_x[:1]))
        labels = {p: torch.cat([m(b) for b in test_x.split(BATCH)]).argmax(1) for p, m in compiled.items()}
        speed = images_per_second({**compiled, "torchvision": baseline}, test_x[:BATCH].contiguous(), repeats)
    labels["int8"], speed["int8"] = torch.tensor(int8["labels"]), int8["img_s"]
    row = {"arch": arch, "ran_in": {**{p: m.precision for p, m in compiled.items()}, "int8": int8["ran_in"]}}
    row.update({f"{p}_img_s": round(s, 1) for p, s in speed.items()})
    row.update(bf16_vs_fp32=round(speed["bf16"] / speed["fp32"], 2), int8_vs_fp32=round(int8["vs_fp32"], 2))
    row["fp32_vs_torchvision"] = round(speed["fp32"] / speed["torchvision"], 2)
    row.update({f"{p}_agreement": round(float((labels[p] == labels["fp32"]).float().mean()), 4) for p in ("bf16", "int8")})
    row.update({f"{p}_accuracy": round(float((labels[p] == test_y).float().mean()), 4) for p in labels})
    row["agreement_images"] = len(test_x)
    return row


def fine_tuned_flowers(minutes: float, tmp: Path) -> dict:
    """A flowers model from tlcore.train_budget (the shared MobileNetV2, fine-tuned), calibrated
    for int8 on its training images, then evaluated on its untouched test half in each precision."""
    flowers = shared_dir() / "data" / "flowers" / "train"
    weights = shared_dir() / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    result = tlcore.train_budget(flowers, minutes * 60, weights=weights, verbose=False, **FLOWERS_SPLIT)
    data = result.learner.data
    saved = result.learner.save(tmp / "flowers.tlc")
    clf = tlcore.load(saved)
    accuracy, ran_in = {}, {}
    for precision in ("fp32", "bf16"):
        clf.precision = precision
        accuracy[precision] = round(clf.evaluate(data.test).accuracy, 4)
        ran_in[precision] = tlcore.precision.resolve(precision, clf.spec.int8)
    int8 = in_int8_process({"kind": "fine_tuned", "model": str(saved), "source": str(flowers),
                            "image_size": result.plan.image_size, "threads": tlcore.num_threads()})
    accuracy["int8"], ran_in["int8"] = round(int8["accuracy"], 4), int8["ran_in"]
    return {"budget_min": minutes, "test_images": len(data.test), "image_size": result.plan.image_size,
            "ran_in": ran_in, "int8_agreement_on_calibration_check": round(int8["agreement"], 4),
            "accuracy": accuracy,
            "max_drop_points": round(100 * max(accuracy["fp32"] - accuracy[p] for p in ("bf16", "int8")), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18", "resnet50"])
    parser.add_argument("--fine-tuned-minutes", type=float, default=5.0,
                        help="budget of the fine-tuned flowers model evaluated in each precision (0: skip)")
    parser.add_argument("--int8-job", help=argparse.SUPPRESS)  # the child process's work, as JSON
    args = parser.parse_args()
    if args.int8_job:
        tlcore.precision.run_int8_without_amx()  # before any model runs: oneDNN reads it once
        print(json.dumps(int8_job(json.loads(args.int8_job))))
        return
    with tempfile.TemporaryDirectory(prefix="tlcore-precision-") as tmp:
        rows = [bench(arch, args.repeats, Path(tmp)) for arch in args.models]
        fine_tuned = fine_tuned_flowers(args.fine_tuned_minutes, Path(tmp)) if args.fine_tuned_minutes > 0 else None
    result = {"threads": tlcore.num_threads(), "cpu": tlcore.precision.cpu_features(), "batch": BATCH,
              "image_size": SIZE, "models": rows, "fine_tuned_flowers": fine_tuned,
              "min_agreement": min(min(r["bf16_agreement"], r["int8_agreement"]) for r in rows)}
    last = rows[-1]
    result["ratio"] = round(max(last["bf16_vs_fp32"], last["int8_vs_fp32"]), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
