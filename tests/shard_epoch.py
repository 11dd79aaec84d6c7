"""Run under torchrun by tests/test_shards.py: the keys each rank's training loader deals, step by step.

``python shard_epoch.py SHARDS STEPS BATCH WORKERS OUT`` — every rank writes OUT.rank<r>.json.
"""

import json
import sys

import torch

from lab.data.pairs import DataConfig, build_pairs, step_batches
from lab.train import dist

source, steps, batch, workers, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = dist.init(torch.device("cpu"))
cfg = DataConfig(source=source, image_size=32, workers=workers, shuffle_buffer=20, augment="crop", augmentations=4)
loader = step_batches(build_pairs(cfg), batch, steps, 0, 0, workers, (ctx.rank, ctx.world_size))
keys = [b.factors["key"].tolist() for b in loader]
with open(f"{out}.rank{ctx.rank}.json", "w") as f:
    json.dump(keys, f)
dist.barrier(ctx)
