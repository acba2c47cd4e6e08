"""Distributed training on torch's own stack: torch.distributed, DDP and the torchrun launcher.

A process learns that it is one of several from the environment torchrun sets (RANK,
WORLD_SIZE, LOCAL_RANK, ...), whoever started it: `guide ... --nproc N` (which runs
`torch.distributed.run` in-process) or an external `torchrun` across machines. The
helpers below are no-ops in a single process, so the loop calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as td

from torchguide.device import available_cores, pick_device
from torchguide.errors import ConfigError, GuideError, RunFailed

TIMEOUT = timedelta(minutes=10)  # a collective that waits longer than this fails the job instead of hanging


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def launched() -> bool:
    """True in a process started by torchrun (or `guide --nproc`)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def env_dist() -> Dist:
    env = os.environ
    world = int(env["WORLD_SIZE"])
    return Dist(int(env["RANK"]), int(env["LOCAL_RANK"]), world, int(env.get("LOCAL_WORLD_SIZE", world)))


def setup(strategy: str, device_request: str) -> tuple[Dist, torch.device | None]:
    """Join the process group when launched by torchrun; returns (dist, this rank's device or None).

    nccl on CUDA, gloo on the CPU. A single process returns (SINGLE, None): the device is
    then picked as usual.
    """
    if not launched():
        return SINGLE, None
    if strategy not in ("auto", "ddp"):
        raise ConfigError(f"train.strategy: {strategy} in a job of {os.environ['WORLD_SIZE']} processes",
                          "use train.strategy=auto or ddp under torchrun / --nproc")
    dist = env_dist()
    use_cuda = pick_device(device_request)[0].type == "cuda"  # the same checks and errors as one process
    if use_cuda:
        check_gpu_count(dist.local_world_size, torch.cuda.device_count())
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not td.is_initialized():
        td.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT,
                              device_id=device if use_cuda else None)
    return dist, device


def check_gpu_count(processes: int, gpus: int) -> None:
    """Refuse more processes on this machine than it has GPUs: two ranks on one GPU is an NCCL error.

    Raises:
        ConfigError: naming both numbers.
    """
    if processes > gpus:
        raise ConfigError(f"{processes} processes on this machine, but it has {gpus} GPU(s): "
                          "each process needs a GPU of its own",
                          f"use --nproc {gpus} or fewer, or train.device=cpu")


def teardown() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def active() -> bool:
    return td.is_available() and td.is_initialized() and td.get_world_size() > 1


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks, in place (nothing in a single process)."""
    if active():
        td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * td.get_world_size()
    td.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        td.barrier()


# ---------------------------------------------------------------- launching

NPROC_ENV = "GUIDE_NPROC"  # set in the launcher of `guide --nproc N`; its ranks inherit it


def relaunch(nproc: int, argv: list[str]) -> None:
    """Run `guide argv` in `nproc` local processes through torch.distributed.run (torchrun).

    This process becomes the launcher: it marks the job as started by `guide --nproc`
    (read back with `relaunched_nproc`) and returns when every rank has finished.

    Raises:
        GuideError: a rank failed on bad input (exit code 2).
        RunFailed: a rank failed otherwise, or the job was stopped by a signal (exit code 1).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ[NPROC_ENV] = str(nproc)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))  # torchrun would force 1
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # ranks report their own errors
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                         "--monitor-interval=0.2", "--module", "cli.main", *argv])
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        error = GuideError if code == 2 else RunFailed
        raise error(f"rank {rank} of {nproc} {how}; the job was stopped",
                    "its message is above" if code > 0 else "look for memory or signal trouble") from exc
    except SignalException as exc:  # Ctrl-C or SIGTERM to the launcher: the ranks got it too and saved
        raise RunFailed(f"the job was stopped by {exc.sigval.name}", "rank 0's message above says how to resume") \
            from exc
    finally:
        sys.stdout.flush()


def relaunched_nproc() -> int | None:
    """N in a process of a job started by `guide ... --nproc N` (or in its launcher), else None.

    None also under an external torchrun, whose processes `launched()` recognises all the same.
    """
    value = os.environ.get(NPROC_ENV)
    return int(value) if value else None


def lost_peer(exc: BaseException) -> bool:
    """True for the error a rank gets when another rank of the job died under it."""
    text = str(exc)
    return active() and isinstance(exc, RuntimeError) and any(
        s in text for s in ("Connection reset by peer", "Connection closed by peer", "NCCL communicator was aborted",
                            "Broken pipe", "Socket Timeout", "timed out"))
