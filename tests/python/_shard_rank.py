"""One rank of test_shards' two-process test: loads its share of tar shards for two
epochs, and rank 0 writes every rank's samples (as shard:member names) per epoch."""
import datetime
import json
import sys
from pathlib import Path

import torch.distributed as dist

import tlcore

folder, out = Path(sys.argv[1]), Path(sys.argv[2])
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
rank, world = dist.get_rank(), dist.get_world_size()
ds = tlcore.open_shards(folder)
loader = tlcore.DataLoader(ds, "cifar-eval", image_size=12, batch_size=4, seed=3, rank=rank,
                           world_size=world, shuffle_buffer=5)
epochs = []
for epoch in range(2):
    loader.set_epoch(epoch)
    # "d/train-0000.tar:s0/00000.png": the same names on every rank and in the test.
    names = [folder.name + "/" + ds.source(int(i)).rsplit("/" + folder.name + "/", 1)[1]
             for _, _, indices in loader.batches() for i in indices]
    gathered = [None] * world
    dist.all_gather_object(gathered, names)
    epochs.append(gathered)
if rank == 0:
    out.write_text(json.dumps(epochs))
dist.destroy_process_group()
