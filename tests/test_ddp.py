"""An archdsl network trains under PyTorch's DistributedDataParallel: 2 processes (gloo, CPU).

`archdsl.build_torch` makes an ordinary nn.Module, so the engine needs nothing from archdsl:
each process builds the network (from a different seed: DDP broadcasts rank 0's weights), trains
a few SGD steps on its own shard of a fixed synthetic task, and reports its losses and final
weights.  The loss must fall and the two replicas must hold bit-identical parameters (DDP
averages the gradients) and batch-norm buffers (DDP broadcasts rank 0's before each forward).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

NET = """
block conv_bn(c, stride = 1) {
    conv: conv(c, 3, stride=stride, pad=1, bias=false) -> bn: bn -> relu
}
network small(classes = 4) {
    input 3 x 8 x 8
    stem: conv_bn(8)
    stage: (conv_bn(16, stride=2) -> conv_bn(16))
    global_avgpool -> flatten -> fc: fc(classes)
}
"""
WORLD = 2
STEPS = 8


def _task(n: int = 64):
    """A learnable synthetic task: the class is which colour channel is brightest."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = torch.randint(0, 3, (n,), generator=gen)
    x[torch.arange(n), y] += 1.5
    return x, y


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    import archdsl

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
        path = Path(folder) / "small.arch"
        model = archdsl.build_torch(path)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        x, y = _task()
        shard = slice(rank, None, world)  # each process its own half of the data
        xs, ys = x[shard], y[shard]
        losses = []
        for step in range(STEPS):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(ddp(xs), ys)
            loss.backward()
            opt.step()
            total = loss.detach().clone()
            dist.all_reduce(total)  # the loss over the whole batch
            losses.append(total.item() / world)
        ddp.eval()
        with torch.no_grad():  # DDP broadcasts rank 0's batch-norm statistics before a forward
            ddp(xs[:1])
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save({"losses": losses, "state": state}, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes, each importing torch: about a minute on 2 busy cores
def test_two_processes_train_an_archdsl_network_under_ddp(tmp_path):
    (tmp_path / "small.arch").write_text(NET)
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    losses = results[0]["losses"]
    assert results[1]["losses"] == losses  # both report the all-reduced loss
    assert losses[-1] < 0.8 * losses[0], f"the loss did not fall: {losses}"
    a, b = results[0]["state"], results[1]["state"]
    assert a.keys() == b.keys() and "stage.0.conv.weight" in a and "fc.weight" in a
    for key in a:
        assert torch.equal(a[key], b[key]), f"the replicas differ at {key}"
    # the weights moved from rank 0's initialization (the broadcast one)
    torch.manual_seed(100)
    import archdsl

    start = archdsl.build_torch(tmp_path / "small.arch").state_dict()
    assert not torch.equal(start["fc.weight"], a["fc.weight"])
