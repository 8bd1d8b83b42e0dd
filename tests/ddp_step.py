"""One optimisation step with DDP over N processes (torchrun) on a fixed total batch of 8.

Batch norm statistics are frozen (eval mode), so that only the averaging of gradients across
processes is compared with a single-process step; rank 0 saves the weights to argv[1]."""

import sys

import torch
import torch.nn.functional as F
import timm
from timm.optim import create_optimizer_v2
from timm.utils import dispatch_clip_grad

import tiny_models  # noqa: F401
from lsnet.engine.distributed import cleanup, init_distributed

info = init_distributed("cpu")
torch.manual_seed(0)
model = timm.create_model("lsnet_test", num_classes=10, img_size=64).eval()
gen = torch.Generator().manual_seed(1)
x = torch.randn(8, 3, 64, 64, generator=gen)
y = torch.randint(0, 10, (8,), generator=gen)
xs, ys = x.chunk(info.world_size)[info.rank], y.chunk(info.world_size)[info.rank]
before = {k: v.clone() for k, v in model.state_dict().items()}
net = torch.nn.parallel.DistributedDataParallel(model) if info.enabled else model
opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.025)
F.cross_entropy(net(xs), ys).backward()
dispatch_clip_grad(model.parameters(), 0.02, mode="agc")
opt.step()
if info.rank == 0:
    out = {k: v.clone() for k, v in model.state_dict().items()}
    out.update({"__before__" + k: v for k, v in before.items()})
    torch.save(out, sys.argv[1])
cleanup(info)
