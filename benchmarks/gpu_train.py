"""One short GPU session, start to finish (issue #17 section 2; run by ``benchmarks/gpu_train.sh``).

Stages, each timed and recorded in ``OUT/metrics.json`` as soon as it ends (a session cut
short keeps what is done):

1. ``synth``: a synthetic set with per-split cameras (few views per training frame, 12 per test
   frame) with every core.
2. ``pack``: the packed stores (train/val/test at the cpu preset's crop, train at the paper
   preset's crop).
3. ``throughput``: images/s of the training step of the ``cpu`` and ``paper`` presets with the
   packed store on the device, batched augmentation there, channels-last and bf16 autocast.
4. ``train``: the ``--train-config`` preset for ``--minutes`` of wall time (cosine schedule sized
   from the measured throughput); the weights are written every ``--save-every`` seconds.
5. ``evaluate``: z = 0 MPJPE (RR, Global) on the test split, and the mean training pose's.

Weights: ``OUT/weights/`` holds the model's state dict, floating parameters in float16
(buffers such as the parameter normalizer's statistics as they are), in pieces of at most
``--piece-mib`` MiB (a tensor larger than that is cut along its first dimension), plus
``index.json`` and ``config.json``; :func:`load_weights` rebuilds the model. ``--cpu-smoke``
runs every stage with tiny sizes on the CPU (tests/test_packed.py runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from handflow.atomic import atomic_path, write_text

#: weights pieces: at most this many MiB each (the session's file-size limit)
PIECE_MIB = 16
#: bytes budgeted per tensor on top of its data (names, pickle framing) and per piece (zip directory)
TENSOR_OVERHEAD, PIECE_HEADROOM = 1024, 64 * 1024
#: steps not timed at the start of a throughput run (cuDNN autotuning, allocator warm-up)
WARMUP_STEPS = 20
#: fraction of the wall-time budget the cosine schedule is sized for (the rest: start-up, checkpoints)
SCHEDULE_FILL = 0.9
#: full run and smoke sizes
FULL = dict(frames=4000, cameras=12, train_cameras=2, val_cameras=2, test_cameras=12, test_frames=100, image_size=256,
            throughput={"cpu": [32, 256], "paper": [64]}, tp_steps=150, eval_limit=None, overrides=[])
SMOKE = dict(frames=12, cameras=3, train_cameras=1, val_cameras=1, test_cameras=3, test_frames=None, image_size=64,
             throughput={"cpu": [4], "paper": [2]}, tp_steps=3, eval_limit=16,
             overrides=["data.image_size=64", "model.flow_hidden=64", "data.batch_size=4", "train.threads=1"])


def device_name() -> str:
    """``nvidia-smi`` name of GPU 0, else the CPU model (what each figure was measured on)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), no GPU"


class Report:
    """``OUT/metrics.json``, rewritten (atomically) after every stage."""

    def __init__(self, out: Path, **header: Any) -> None:
        self.path, self.data = out / "metrics.json", {**header, "stages": {}}
        self.save()

    def stage(self, name: str, seconds: float, **values: Any) -> None:
        self.data["stages"][name] = {"seconds": round(seconds, 2), **values}
        self.save()
        print(f"[{name}] {seconds:.1f} s {json.dumps(values)}", flush=True)

    def save(self) -> None:
        write_text(self.path, json.dumps(self.data, indent=1) + "\n")


# ----------------------------------------------------------------------------- weights in pieces
def save_weights(module: torch.nn.Module, cfg: Any, folder: Path, piece_mib: float = PIECE_MIB) -> dict[str, Any]:
    """Write ``module``'s state dict to ``folder`` in pieces of at most ``piece_mib`` MiB
    (floating parameters in float16, buffers as they are); replaces an earlier set atomically
    enough for a reader: pieces first, ``index.json`` last. Returns the index."""
    from handflow.config import to_dict

    cap = int(piece_mib * 2**20)
    limit = cap - PIECE_HEADROOM
    params = {n for n, _ in module.named_parameters()}
    pieces: list[dict[str, Any]] = [{}]
    sizes = [0]
    entries: dict[str, Any] = {}
    for name, t in module.state_dict().items():
        t = t.detach().cpu()
        if name in params and t.is_floating_point():
            t = t.half()
        too_big = t.dim() > 0 and t.numel() * t.element_size() > limit
        rows = max(1, limit // max(1, t[0].numel() * t.element_size())) if too_big else None
        parts = list(t.split(rows)) if rows else [t]
        entries[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "parts": []}
        for k, p in enumerate(parts):
            nbytes = p.numel() * p.element_size() + TENSOR_OVERHEAD
            if sizes[-1] + nbytes > limit and pieces[-1]:
                pieces.append({})
                sizes.append(0)
            key = name if len(parts) == 1 else f"{name}#{k}"
            pieces[-1][key] = p.contiguous().clone()
            sizes[-1] += nbytes
            entries[name]["parts"].append([len(pieces) - 1, key])
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, piece in enumerate(pieces):
        f = folder / f"weights-{i:03d}-of-{len(pieces):03d}.pt"
        with atomic_path(f) as tmp:
            torch.save(piece, tmp)
            if tmp.stat().st_size > cap:  # the budget above is conservative: never seen
                raise RuntimeError(f"weights piece {f.name} exceeds {piece_mib} MiB")
        files.append(f.name)
    for old in folder.glob("weights-*.pt"):
        if old.name not in files:
            old.unlink()
    index = {"files": files, "tensors": entries, "piece_mib": piece_mib}
    (folder / "config.json").write_text(json.dumps(to_dict(cfg), indent=1) + "\n")
    write_text(folder / "index.json", json.dumps(index, indent=1) + "\n")
    return index


def load_weights(folder: Path) -> Any:
    """The :class:`~handflow.training.module.HandFlowModule` (eval mode, float32) saved by
    :func:`save_weights`; every piece is read with ``weights_only`` loading."""
    from handflow.config import saved_config
    from handflow.safeio import load_torch_file
    from handflow.training.module import HandFlowModule

    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    cfg = saved_config(json.loads((folder / "config.json").read_text()))
    pieces = [load_torch_file(folder / f, what="weights piece") for f in index["files"]]
    module = HandFlowModule(cfg)
    ref = module.state_dict()
    state = {}
    for n, e in index["tensors"].items():
        parts = [pieces[i][k] for i, k in e["parts"]]
        state[n] = (parts[0] if len(parts) == 1 else torch.cat(parts)).to(ref[n].dtype)
    module.load_state_dict(state)
    return module.eval()


# ----------------------------------------------------------------------------- callbacks
def _callbacks() -> tuple[type, type, type]:
    import lightning.pytorch as pl

    class ChannelsLast(pl.Callback):
        """The model in channels-last memory format (the packed loader's images are)."""

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.strategy.root_device.type == "cuda":
                pl_module.to(memory_format=torch.channels_last)

    class StepTimer(pl.Callback):
        """Wall time of the training steps after ``warmup``."""

        def __init__(self, warmup: int) -> None:
            self.warmup, self.t0, self.s0, self.steps, self.seconds = warmup, None, 0, 0, 0.0

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if self.t0 is None:
                if trainer.global_step >= self.warmup:
                    self.t0, self.s0 = now, trainer.global_step
            else:
                self.steps, self.seconds = trainer.global_step - self.s0, now - self.t0

    class SaveEvery(pl.Callback):
        """The weights in pieces every ``every`` seconds and at the end."""

        def __init__(self, every: float, save: Any) -> None:
            self.every, self.save, self.last = every, save, time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
            if time.perf_counter() - self.last >= self.every:
                self.save(pl_module, trainer.global_step)
                self.last = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.save(pl_module, trainer.global_step)

    return ChannelsLast, StepTimer, SaveEvery


# ----------------------------------------------------------------------------- stages
def _config(preset: str, data: Path, store: Path, out: Path, smoke: bool, extra: list[str]) -> Any:
    from handflow.config import load_config

    o = [f"data.root={data}", f"data.packed={store}", f"train.out_dir={out}", "train.val_every=100000000",
         "train.ckpt_every=100000000", "train.log_every=50", "data.num_workers=0",
         f"train.accelerator={'cpu' if smoke else 'gpu'}", "train.devices=1", "train.precision=bf16-mixed",
         "train.max_minutes=null"]
    return load_config(preset, o + extra)


def _fit(cfg: Any, callbacks: list) -> Any:
    from handflow.training import train

    return train(cfg, resume=False, enable_progress_bar=False, extra_callbacks=callbacks)


def throughput(preset: str, batch: int, data: Path, store: Path, work: Path, smoke: bool, steps: int, extra: list[str]) -> dict:
    """Images/s of ``preset``'s training step at ``batch``, packed store on the device."""
    ChannelsLast, StepTimer, _ = _callbacks()
    warm = 1 if smoke else WARMUP_STEPS
    cfg = _config(preset, data, store, work / f"tp_{preset}_{batch}", smoke,
                  extra + [f"data.batch_size={batch}", f"train.max_steps={warm + steps}"])
    timer = StepTimer(warm)
    _fit(cfg, [ChannelsLast(), timer])
    sps = timer.steps / timer.seconds if timer.seconds else float("nan")
    return {"preset": preset, "backbone": cfg.model.backbone, "image_size": cfg.data.image_size, "batch": batch,
            "precision": cfg.train.precision, "steps_per_s": round(sps, 3), "images_per_s": round(sps * batch, 1),
            "timed_steps": timer.steps}


@torch.no_grad()
def evaluate(module: Any, store: Path, data: Path, limit: int | None, device: torch.device) -> dict:
    """z = 0 MPJPE (RR, Global, mm) on the packed test split of ``store``, and that of the mean
    training parameters (the no-image reference)."""
    from handflow.data.packed import PackedDataset
    from handflow.metrics import mpjpe
    from handflow.models import decode_joints

    ds = PackedDataset(store, "test", root=data).place(device)
    size = ds.size
    t = PackedDataset(store, "train").t
    y_mean = t["y"][t["has_params"]].float().mean(0)  # the mean training parameters: the no-image reference
    module = module.to(device).eval()
    n = len(ds) if limit is None else min(limit, len(ds))
    err: dict[str, list[torch.Tensor]] = {k: [] for k in ("rr", "global", "mean_rr", "mean_global")}
    for lo in range(0, n, 64):
        b = ds.batch(list(range(lo, min(lo + 64, n))), None)
        K, gt, valid = b["K"].to(device), b["joints_cam"].to(device), b["joint_valid"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats = module.model.features(b["image"].to(device))
        z0 = module.model.z0(feats.float())
        J = decode_joints(z0, K, size, module.hand_model)
        Jm = decode_joints(y_mean.to(device).expand(len(K), -1), K, size, module.hand_model)
        for a in ("rr", "global"):
            err[a].append(mpjpe(J, gt, a, mask=valid).cpu())
            err[f"mean_{a}"].append(mpjpe(Jm, gt, a, mask=valid).cpu())
    out = {}
    for k, v in err.items():
        e = torch.cat(v)
        name = f"{'mean_pose' if k.startswith('mean') else 'z0'}_{k.removeprefix('mean_')}_mm"
        out[name] = round(float(e[e.isfinite()].mean()), 2)
    return {"images": n, **out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")),
                    help="results (default $OUT or ./gpu_out)")
    ap.add_argument("--work", type=Path, default=None,
                    help="data and stores (default: a folder in the system's temporary directory, outside OUT so that "
                         "only results travel back; deleted at the end unless --keep-work)")
    ap.add_argument("--minutes", type=float, default=6.0, help="wall time of the training stage")
    ap.add_argument("--train-config", default="cpu", help="preset trained in the training stage (cpu or paper)")
    ap.add_argument("--save-every", type=float, default=60.0, help="seconds between weight saves while training")
    ap.add_argument("--piece-mib", type=float, default=PIECE_MIB, help="largest weights piece, MiB")
    ap.add_argument("--frames", type=int, default=None, help="synthetic frames (default 4000; smoke 12)")
    ap.add_argument("--skip-throughput", action="store_true", help="no throughput stage")
    ap.add_argument("--cpu-smoke", action="store_true", help="every stage with tiny sizes on the CPU")
    ap.add_argument("--keep-work", action="store_true", help="keep the data and stores")
    a = ap.parse_args(argv)
    P = dict(SMOKE if a.cpu_smoke else FULL)
    if a.frames:
        P["frames"] = a.frames
    if not a.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke to test the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if a.cpu_smoke else "cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    work = a.work or Path(tempfile.gettempdir()) / "handflow_gpu_work"  # stable: a rerun resumes synth and pack
    cores = os.cpu_count() or 1
    rep = Report(out, device=device_name(), torch=torch.__version__, python=platform.python_version(), cores=cores,
                 mode="cpu-smoke" if a.cpu_smoke else "gpu", started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    from handflow.config import load_config
    from handflow.data.packed import pack_split
    from handflow.data.synth.generate import SynthConfig, generate

    # 1. synthetic data
    t0 = time.perf_counter()
    data = work / "data"
    sc = SynthConfig(frames=P["frames"], cameras=P["cameras"], image_size=P["image_size"], seed=0, test_frames=P["test_frames"],
                     train_cameras=P["train_cameras"], val_cameras=P["val_cameras"], test_cameras=P["test_cameras"])
    res = generate(data, sc, workers=1 if a.cpu_smoke else cores, progress=False)
    summary = res["summary"] or json.loads((data / "synth_summary.json").read_text())
    rep.stage("synth", time.perf_counter() - t0, settings=sc.to_json(),
              images={s: v["images"] for s, v in summary["splits"].items()},
              frames={s: v["frames"] for s, v in summary["splits"].items()})

    # 2. packed stores: the training crop of each preset
    t0 = time.perf_counter()
    sizes = {p: load_config(p, P["overrides"]).data.image_size for p in ("cpu", "paper")}
    stores = {p: work / f"store{sizes[p]}" for p in sizes}
    workers = 0 if a.cpu_smoke else cores
    for p, st in stores.items():
        splits = ("train", "val", "test") if p == a.train_config or p == "cpu" else ("train",)
        for s in splits:
            pack_split(data, s, st, sizes[p], workers=workers, progress=False)
    rep.stage("pack", time.perf_counter() - t0, stores={p: str(s) for p, s in stores.items()})

    # 3. throughput, packed store on the device, channels-last, bf16 autocast
    tp = []
    if not a.skip_throughput:
        t0 = time.perf_counter()
        for preset, batches in P["throughput"].items():
            for b in batches:
                r = throughput(preset, b, data, stores[preset], work, a.cpu_smoke, P["tp_steps"], P["overrides"])
                tp.append({**r, "device": rep.data["device"]})
                rep.stage("throughput", time.perf_counter() - t0, results=tp)

    # 4. training for a fixed wall time; the weights written while it runs
    t0 = time.perf_counter()
    ChannelsLast, StepTimer, SaveEvery = _callbacks()
    batch = load_config(a.train_config, P["overrides"]).data.batch_size
    same = [r for r in tp if r["preset"] == a.train_config and r["batch"] == batch]
    sps = same[0]["steps_per_s"] if same and math.isfinite(same[0]["steps_per_s"]) else None
    steps = max(1, int(sps * a.minutes * 60 * SCHEDULE_FILL)) if sps else 100000
    if a.cpu_smoke:
        steps = min(steps, 4)
    cfg = _config(a.train_config, data, stores[a.train_config], work / "train", a.cpu_smoke,
                  P["overrides"] + [f"train.max_minutes={a.minutes}", f"train.max_steps={steps}"])

    def save(module: Any, step: int) -> None:
        idx = save_weights(module, cfg, out / "weights", a.piece_mib)
        largest = max((out / "weights" / f).stat().st_size for f in idx["files"]) / 2**20
        rep.data["weights"] = {"step": step, "files": idx["files"], "piece_mib": a.piece_mib,
                               "largest_piece_mib": round(largest, 2)}
        rep.save()

    timer = StepTimer(0)
    _fit(cfg, [ChannelsLast(), timer, SaveEvery(a.save_every, save)])
    rep.stage("train", time.perf_counter() - t0, preset=a.train_config, planned_steps=steps, steps=timer.s0 + timer.steps,
              minutes=a.minutes,
              images_per_s=round(timer.steps * cfg.data.batch_size / timer.seconds, 1) if timer.seconds else None,
              device=rep.data["device"])

    # 5. evaluation of the saved weights (what a cut session leaves behind)
    t0 = time.perf_counter()
    module = load_weights(out / "weights")
    ev = evaluate(module, stores[a.train_config], data, P["eval_limit"], device)
    rep.stage("evaluate", time.perf_counter() - t0, split="test", **ev, device=rep.data["device"])
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    rep.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rep.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
