"""Images/s of tlcore's compiled C++ inference vs torchvision eager and optimize_for_inference.

One process, the same threads and the same weights for all three; batch 32 at 224 px by
default. tlcore's path is traced and optimised from C++ (Model.compile_for_inference):
BatchNorm folded into the convolutions, oneDNN prepacked weights, no autograd. Outputs are
checked to agree (max abs difference reported). Prints one JSON line; "ratio_vs_optimized"
(minimum over models) and "ratio" (minimum over models of tlcore / eager) last.

Usage: .venv/bin/python benchmarks/models.py [--repeats 3] [--batch 32] [--models resnet18 ...]
"""
from __future__ import annotations

import argparse
import json

import torch
import torchvision

import tlcore

from _common import median_time


def _randomize_norms(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so folding them is really exercised."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def bench(arch: str, batch: int, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    ref = getattr(torchvision.models, arch)()
    _randomize_norms(ref)
    ref.eval()
    optimized = torch.jit.optimize_for_inference(torch.jit.script(ref))
    model = tlcore.create_model(arch)
    model.load_state_dict(ref.state_dict())
    fast = model.compile_for_inference(size)
    x = torch.randn(batch, 3, size, size)

    with torch.inference_mode():
        expected = ref(x)
        diff_opt = (optimized(x) - expected).abs().max().item()  # also the warm-up call
        diff = (fast(x) - expected).abs().max().item()
        eager_s = median_time(lambda: ref(x), repeats)
        optimized_s = median_time(lambda: optimized(x), repeats)
        tlcore_s = median_time(lambda: fast(x), repeats)
    return {
        "eager_ips": round(batch / eager_s, 2),
        "optimized_ips": round(batch / optimized_s, 2),
        "tlcore_ips": round(batch / tlcore_s, 2),
        "ratio": round(eager_s / tlcore_s, 2),
        "ratio_vs_optimized": round(optimized_s / tlcore_s, 2),
        "max_abs_diff": diff,
        "optimized_max_abs_diff": diff_opt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18", "resnet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: every available core")
    args = parser.parse_args()

    tlcore.set_num_threads(args.threads)  # torch's intra-op pool, shared by all three
    results = {arch: bench(arch, args.batch, args.size, args.repeats) for arch in args.models}
    print(json.dumps({
        "batch": args.batch, "image_size": args.size, "threads": torch.get_num_threads(),
        "models": results,
        "ratio_vs_optimized": min(r["ratio_vs_optimized"] for r in results.values()),
        "ratio": min(r["ratio"] for r in results.values()),
    }))


if __name__ == "__main__":
    main()
