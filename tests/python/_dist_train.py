"""One rank of the distributed tests (or a single process when WORLD_SIZE is unset).

Trains a simple CNN without dropout, BatchNorm as --batchnorm says, with SGD on a
Fashion-MNIST subset, then writes <out>.rank<R>.json (its shard of epoch 0 and the
history) and, on rank 0, <out>.pt (the weights).
"""
import argparse
import json
import os
import signal
import sys

import torch
import torch.distributed

import tlcore

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--per-class", type=int, default=24)
p.add_argument("--batchnorm", choices=["eval", "sync", "local"], default="eval",
               help="inference mode, or training mode with all ranks' batch statistics or each rank's own")
p.add_argument("--no-augment", dest="augment", action="store_false")
p.add_argument("--checkpoint-dir", default=None)
p.add_argument("--kill-rank-0-after-epoch", type=int, default=None, metavar="EPOCH",
               help="rank 0 SIGKILLs itself once this epoch (from 0) has ended")
p.add_argument("--exit-code-on-rank", type=int, nargs=2, default=None, metavar=("RANK", "CODE"))
p.add_argument("--torch-distributed", action="store_true",
               help="make the process group with torch.distributed (Gloo), as a user's script would")
p.add_argument("--device", default="cpu")
p.add_argument("--test-set-only", action="store_true", help="train and validate on parts of the test set")
args = p.parse_args()

rank = tlcore.distributed.rank()
if args.torch_distributed and tlcore.distributed.world_size() > 1:
    import datetime

    torch.distributed.init_process_group(
        "gloo", timeout=datetime.timedelta(seconds=float(os.environ["TLCORE_DIST_TIMEOUT"])))
if args.exit_code_on_rank and rank == args.exit_code_on_rank[0]:
    tlcore.distributed.process_group(args.device)  # join, so the other ranks are left waiting mid-run
    sys.exit(args.exit_code_on_rank[1])

test = tlcore.fashion_mnist(train=False)
if args.test_set_only:  # both from the test set, disjoint: a GPU machine may have only that
    labels, taken, picks = test.labels(), {}, ([], [])
    for i in tlcore.per_class_subset(labels, args.per_class + 10, 0):
        taken[labels[i]] = taken.get(labels[i], 0) + 1
        picks[taken[labels[i]] > args.per_class].append(i)
    train, test = tlcore._core.Subset(test, picks[0]), tlcore._core.Subset(test, picks[1])
else:
    train = tlcore.fashion_mnist(train=True)
    train = tlcore._core.Subset(train, tlcore.per_class_subset(train.labels(), args.per_class, 0))
    test = tlcore._core.Subset(test, tlcore.per_class_subset(test.labels(), 10, 0))
data = tlcore.ImageData(train, valid=test, seed=7, image_size=28, channels=1, batch_size=args.batch_size,
                        train_transform="cifar-train" if args.augment else "cifar-eval", eval_transform="cifar-eval")
# No dropout: its masks would differ between runs.
learner = tlcore.Learner("simple_cnn", data, device=args.device, verbose=False, seed=3,
                         checkpoint_dir=args.checkpoint_dir, head="dropout_linear", dropout=0.0)
learner.model.batchnorm_eval = args.batchnorm == "eval"
group = learner.group
shard = data.loader("train", rank=group.rank if group else 0,
                    world_size=group.world_size if group else 1)._loader.epoch_indices(0)
with open(f"{args.out}.rank{rank}.started", "w"):
    pass
if args.kill_rank_0_after_epoch is not None and rank == 0:
    on_epoch = tlcore.learner._Progress.on_epoch

    def killing_on_epoch(self, stats):
        if stats.epoch == args.kill_rank_0_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        return on_epoch(self, stats)

    tlcore.learner._Progress.on_epoch = killing_on_epoch

history = learner.fit(args.epochs, lr=0.05, optimizer="sgd", momentum=0.9, restore_best=False,
                      sync_batchnorm=args.batchnorm == "sync")
with open(f"{args.out}.rank{rank}.json", "w") as f:
    json.dump({"rank": rank, "world_size": tlcore.distributed.world_size(), "shard": list(shard),
               "history": history, "pid": os.getpid(),
               "group": type(group).__name__ if group else None}, f)
if tlcore.distributed.is_main_process():
    torch.save({k: v.detach().cpu().clone() for k, v in learner.model.state_dict().items()}, f"{args.out}.pt")
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()  # as torch asks of every script that made one
