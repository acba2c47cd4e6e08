"""`make gpu-check`: the CUDA paths end to end through the real `guide` command line, on one GPU.

Prepares the demo data in a temporary folder, then runs each check as a `guide` command
(or torchrun / pytest) and writes benchmarks/gpu-results.json:
`{"device", "torch", "cuda", "checks": [{"name", "passed", "value"}, ...]}`. About five
minutes on one GPU. Without a CUDA GPU it says so and exits with code 2.

    python benchmarks/gpu_check.py [--out benchmarks/gpu-results.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "gpu-results.json"
STEP_TIMEOUT = 240  # seconds for one command; the whole check stays near five minutes

SYNTHETIC = """# Registers the speed check's data and model (written next to the demo data by gpu_check.py).
from benchmarks.gpu_check import SyntheticImages, resnet50_channels_last
from torchguide.registry import DATASETS, MODELS

DATASETS.register("synthetic_images", SyntheticImages, task="image")
MODELS.register("resnet50_channels_last", resnet50_channels_last, task="image")
"""


class SyntheticImages(Dataset):
    """`size` random uint8 RGB images (eight distinct ones, repeated) with random labels: no disk in the way."""

    def __init__(self, size: int = 2560, image_size: int = 224, num_classes: int = 100) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (8, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
        self.targets = torch.randint(0, num_classes, (size,), generator=generator).tolist()
        self.classes = [f"c{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index % len(self.images)], self.targets[index]


def resnet50_channels_last(num_classes: int) -> nn.Module:
    """torchvision's resnet50 with its weights in channels_last, the layout tensor cores read fastest."""
    import torchvision

    return torchvision.models.resnet50(num_classes=num_classes).to(memory_format=torch.channels_last)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the CUDA paths of guide end to end and record the results.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results (JSON)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a "
                        "temporary folder, removed afterwards)")
    parser.add_argument("--skip-speed", action="store_true", help="leave out the resnet50 speed check")
    return parser.parse_args(argv)


def check(name: str, passed: bool, value: Any = None) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value}


def write_results(path: Path, device: str, versions: dict[str, str | None], checks: list[dict[str, Any]]) -> Path:
    """The results file: the device, torch and CUDA versions, and every check."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"device": device, **versions, "passed": all(c["passed"] for c in checks), "checks": checks}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def environment(pin: str | None = None) -> dict[str, str]:
    """The environment of a command: the GPU visible to `auto` unless `pin` names a device."""
    env = {k: v for k, v in os.environ.items() if k not in ("GUIDE_DEVICE", "GUIDE_TUNE")}  # auto measures
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if pin:
        env["GUIDE_DEVICE"] = pin
    return env


def guide(*args: str, pin: str | None = None) -> subprocess.CompletedProcess:
    """Run `guide ARGS` (this checkout's code) and capture its output."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=environment(pin),
                          capture_output=True, text=True, timeout=STEP_TIMEOUT)


def summary_of(result: subprocess.CompletedProcess) -> dict[str, Any]:
    """The --json document a command printed last on stdout ({} when there is none)."""
    for line in reversed(result.stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def failure(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return f"exit {result.returncode}: {lines[-1] if lines else 'no output'}"


class Work:
    """The demo data and the run folders of one check session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.digits, self.reviews = root / "digits", root / "reviews"

    def prepare(self) -> None:
        for name, out in (("digits", self.digits), ("reviews", self.reviews)):
            result = guide("data", name, "--out", str(out))
            if result.returncode != 0:
                raise SystemExit(f"gpu-check: could not prepare the {name} data: {failure(result)}")
        (self.root / "synthetic.py").write_text(SYNTHETIC)

    def digits_args(self, out: str, *overrides: str) -> list[str]:
        return ["train-image", "--config", str(ROOT / "configs/image/digits.yaml"),
                f"data.train.root={self.digits / 'train'}", f"data.test.root={self.digits / 'test'}",
                f"output.dir={self.root / out}", *overrides]

    def reviews_args(self, out: str, *overrides: str) -> list[str]:
        paths = [f"data.{s}.path={self.reviews / f'{s}.csv'}" for s in ("train", "valid", "test")]
        return ["train-text", "--config", str(ROOT / "configs/text/reviews.yaml"), *paths,
                f"output.dir={self.root / out}", *overrides]

    def last(self, out: str) -> Path:
        found = sorted((self.root / out).glob("*/checkpoints/last.pt"))
        return found[-1] if found else self.root / out / "missing.pt"


# ---------------------------------------------------------------- the checks

def check_auto(work: Work) -> list[dict[str, Any]]:
    result = guide(*work.digits_args("auto", "train.epochs=1", "train.max_steps=20", "--json"))
    summary = summary_of(result)
    native = torch.cuda.get_device_capability()[0] >= 8
    wanted = "bf16" if native else "fp16"
    ok = result.returncode == 0 and str(summary.get("device", "")).startswith("cuda") \
        and summary.get("precision") == wanted
    return [check("device and precision auto", ok, f"{summary.get('device')} {summary.get('precision')}"
                  if summary else failure(result))]


def check_auto_measured(work: Work) -> list[dict[str, Any]]:
    """A run long enough to measure: auto times fp32 against the GPU's lower precision and channels_last."""
    result = guide(*work.digits_args("measured", "train.epochs=50", "train.max_steps=600", "--json"))
    auto = summary_of(result).get("auto", {})
    timed = set(auto.get("precision", {}).get("speedup", {}))
    ok = result.returncode == 0 and {"fp32", "fp32 + channels_last"} <= timed and len(timed) == 4
    return [check("precision and channels_last auto, measured on the GPU", ok,
                  {k: v.get("why") for k, v in auto.items()} if auto else failure(result))]


def check_fp16_text(work: Work) -> list[dict[str, Any]]:
    result = guide(*work.reviews_args("fp16", "train.precision=fp16", "train.grad_clip=1.0", "train.epochs=1",
                                      "--json"))
    summary = summary_of(result)
    loss = (summary.get("final") or {}).get("train_loss")
    scaler = torch.load(work.last("fp16"), weights_only=True)["scaler"] if work.last("fp16").exists() else {}
    ok = result.returncode == 0 and summary.get("precision") == "fp16" and loss is not None and loss < 10 \
        and bool(scaler)
    return [check("fp16 + loss scaling + clipping, reviews BiLSTM", ok,
                  {"train_loss": loss, "scale": scaler.get("scale")} if summary else failure(result))]


def check_bf16(work: Work) -> list[dict[str, Any]]:
    if torch.cuda.get_device_capability()[0] < 8:
        return [check("bf16", True, "skipped: no native bf16 on this GPU")]
    result = guide(*work.digits_args("bf16", "train.precision=bf16", "train.epochs=1", "--json"))
    summary = summary_of(result)
    ok = result.returncode == 0 and summary.get("precision") == "bf16"
    return [check("bf16", ok, (summary.get("final") or {}).get("valid_acc") if summary else failure(result))]


def check_moves(work: Work) -> list[dict[str, Any]]:
    """A CPU checkpoint resumed on the GPU; the GPU's checkpoint evaluated on the CPU and the GPU."""
    first = guide(*work.digits_args("moves", "train.device=cpu", "train.epochs=1", "train.precision=fp32"))
    resumed = guide(*work.digits_args("moves", "train.device=cuda", "train.epochs=2", "--resume",
                                      str(work.last("moves")), "--json"))
    checks = [check("a CPU checkpoint resumed on the GPU", first.returncode == 0 and resumed.returncode == 0,
                    summary_of(resumed).get("device") if resumed.returncode == 0 else failure(resumed)
                    if first.returncode == 0 else failure(first))]
    best = work.last("moves").with_name("best.pt")
    on_gpu = summary_of(guide("eval", "--checkpoint", str(best), "--json"))
    on_cpu = summary_of(guide("eval", "--checkpoint", str(best), "--json", pin="cpu"))
    one_sample = 1 / max(on_cpu.get("samples") or 1, 1)  # TF32 convolutions may tip one borderline sample
    same = on_gpu.get("accuracy") is not None and on_cpu.get("accuracy") is not None \
        and abs(on_gpu["accuracy"] - on_cpu["accuracy"]) <= one_sample
    checks.append(check("a GPU checkpoint evaluated on the CPU: the same accuracy", same,
                        {"gpu": on_gpu.get("accuracy"), "cpu": on_cpu.get("accuracy")}))
    return checks


def final_state(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True) if path.exists() else {}


def check_kill_and_resume(work: Work) -> list[dict[str, Any]]:
    """kill -9 mid-run, resume on the GPU; with train.deterministic the weights match an unbroken run."""
    common = ("train.deterministic=true", "train.epochs=4", "train.checkpoint_every.steps=20",
              "data.loader.batch_size=16", "data.loader.num_workers=0")
    reference = guide(*work.digits_args("reference", *common))
    args = work.digits_args("killed", *common)
    process = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STEP_TIMEOUT
    while process.poll() is None and not work.last("killed").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into the next stretch of steps, past the first checkpoint
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = guide(*args, "--resume", str(work.last("killed")))
    a, b = final_state(work.last("reference")), final_state(work.last("killed"))
    same = bool(a and b) and a["state"]["step"] == b["state"]["step"] and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ok = reference.returncode == 0 and resumed.returncode == 0 and killed and same
    value = {"killed_mid_run": killed, "bit_identical": same,
             "step": b.get("state", {}).get("step") if b else None}
    if resumed.returncode != 0:
        value["error"] = failure(resumed)
    return [check("kill -9 and resume on the GPU, bit-identical (deterministic)", ok, value)]


def check_nan(work: Work) -> list[dict[str, Any]]:
    result = guide(*work.digits_args("nan", "optimizer.name=sgd", "optimizer.lr=1e30", "train.precision=fp32",
                                     "train.checkpoint_every.steps=1"))
    last = work.last("nan")
    finite = not last.exists() or all(torch.isfinite(v).all() for v in final_state(last)["model"].values())
    ok = result.returncode == 1 and "NaN" in result.stderr and finite
    return [check("NaN stops the run; last.pt stays finite", ok,
                  {"exit": result.returncode, "last_pt": last.exists(), "finite": finite})]


def check_ddp(work: Work) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "cli.main",
               *work.digits_args("ddp", "train.strategy=ddp", "train.epochs=1", "--json")]
    result = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True,
                            timeout=STEP_TIMEOUT)
    summary = summary_of(result)
    ok = result.returncode == 0 and str(summary.get("device", "")).startswith("cuda")
    return [check("DDP with nccl, torch.distributed.run, 1 process", ok,
                  summary.get("device") if ok else failure(result))]


def check_nproc_refused(work: Work) -> list[dict[str, Any]]:
    wanted = torch.cuda.device_count() + 1
    result = guide(*work.digits_args("nproc", "--nproc", str(wanted)))
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    ok = result.returncode == 2 and len(lines) == 1 and f"{wanted} processes" in lines[0]
    return [check("--nproc above the GPU count refused in one line", ok, lines[0] if lines else failure(result))]


def check_pytest(work: Work) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:xdist", "-q", "tests/test_cuda.py"]
    result = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=STEP_TIMEOUT)
    tail = result.stdout.strip().splitlines()[-1:] or ["no output"]
    return [check("the cuda pytest tests", result.returncode == 0 and "skipped" not in tail[0], tail[0])]


def hand_written_rate(images: int, batch: int, workers: int) -> float:
    """Images per second of the plain loop a reader would write: resnet50, channels_last, bf16 autocast."""
    from torch.utils.data import DataLoader

    dataset = SyntheticImages(size=images)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=True,
                        persistent_workers=True)
    model = resnet50_channels_last(num_classes=100).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(2):  # the first epoch warms up cuDNN and the allocator
        torch.cuda.synchronize()
        started, seen = time.perf_counter(), 0
        for x, y in loader:
            x = x.cuda(non_blocking=True).float().div_(255).contiguous(memory_format=torch.channels_last)
            y = y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - started))
    return rates[-1]


def check_speed(work: Work) -> list[dict[str, Any]]:
    """resnet50 on synthetic data through guide against the hand-written loop, in this one run."""
    images, batch, workers = 5120, 256, 8
    precision = "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"
    result = guide("train-image", "--config", str(ROOT / "configs/image/digits.yaml"),
                   f"imports=[{work.root / 'synthetic.py'}]",
                   f"data.train={{name: synthetic_images, size: {images}}}", "data.valid=null", "data.test=null",
                   "data.transforms={train: [], eval: []}", "model={name: resnet50_channels_last}",
                   "optimizer={name: sgd, lr: 0.01, momentum: 0.9}", "scheduler={name: none}",
                   "name=resnet50-speed", f"data.loader.batch_size={batch}",
                   f"data.loader.num_workers={workers}", "train.epochs=2", f"train.precision={precision}",
                   "train.log_every=1000", f"output.dir={work.root / 'speed'}", "--json")
    summary = summary_of(result)
    if result.returncode != 0 or not summary:
        return [check("resnet50 speed: guide / hand-written loop", False, failure(result))]
    hand = hand_written_rate(images, batch, workers)
    ratio = summary["samples_per_s"] / hand
    return [check("resnet50 speed: guide / hand-written loop (>= 0.97)", ratio >= 0.97,
                  {"ratio": round(ratio, 4), "guide_images_per_s": round(summary["samples_per_s"], 1),
                   "hand_images_per_s": round(hand, 1)}),
            check("resnet50 MFU against the GPU's measured matmul peak", summary.get("utilisation") is not None,
                  {"mfu": summary.get("utilisation"), "peak_flops_per_s": summary.get("peak_flops_per_s")})]


CHECKS: list[Callable[[Work], list[dict[str, Any]]]] = [
    check_auto, check_auto_measured, check_fp16_text, check_bf16, check_moves, check_kill_and_resume, check_nan,
    check_ddp, check_nproc_refused, check_pytest, check_speed]


def run_checks(work: Work, skip_speed: bool) -> list[dict[str, Any]]:
    results = []
    for step in CHECKS:
        if skip_speed and step is check_speed:
            continue
        started = time.perf_counter()
        try:
            found = step(work)
        except (subprocess.TimeoutExpired, OSError, KeyError, RuntimeError) as exc:  # a check that broke down
            found = [check(step.__name__.removeprefix("check_"), False, f"{type(exc).__name__}: {exc}")]
        for item in found:
            print(f"{'ok  ' if item['passed'] else 'FAIL'} {item['name']}: {item['value']} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        results.extend(found)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU is visible on this machine, so nothing was checked "
              "(run it where `nvidia-smi` lists a GPU)", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0)
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
    with tempfile.TemporaryDirectory(prefix="guide-gpu-check-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        work = Work(root)
        work.prepare()
        checks = run_checks(work, args.skip_speed)
    path = write_results(args.out, device, versions, checks)
    passed = sum(c["passed"] for c in checks)
    print(f"gpu-check: {passed} of {len(checks)} checks passed on {device}; results in {path}", file=sys.stderr)
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
