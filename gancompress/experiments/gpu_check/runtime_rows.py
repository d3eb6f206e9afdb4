"""gpu-check's rows for the paths that must work rather than be fast: FastGenerator's CUDA graph,
``torch.compile`` and CPU fallback against eager, ``train.compile`` in stage 3, and torchrun (the
NCCL probe, compress in one CUDA process, compress in two processes on gloo).
"""
from __future__ import annotations

import json
import shutil
import sys

from .check import Check, Outcome, Row, RowFailure, bench_recipe, set_override
from .data import make_cityscapes_like
from .demo_rows import stage_outputs


def parity_row(mode: str) -> Row:
    def run(check: Check) -> Outcome:
        res = check.worker("parity", recipe=str(bench_recipe(check)), mode=mode, batch=1 if check.quick else 2)
        bad = [f"{p} {r['max_abs_diff']:.3g} > {r['tolerance']:.3g}" for p, r in res["precisions"].items()
               if not r["ok"]]
        if bad:
            raise RowFailure(f"{mode} differs from eager: {'; '.join(bad)}")
        figure = ", ".join(f"{p} max|diff| {r['max_abs_diff']:.3g} (tol {r['tolerance']:.3g})"
                           for p, r in res["precisions"].items())
        return Outcome(f"{res['mode_run']}: {figure}", res)

    if mode == "cpu_fallback":
        return Row("parity/cpu_fallback", "FastGenerator on the CPU: every mode runs eager fp32, equal to the module",
                   run, timeout_s=60, estimate_s=10, cpu_only="the CPU fallback is a CPU path")
    return Row(f"parity/{mode}", f"FastGenerator {mode} vs eager on a new input, fp32 and bf16 (max abs difference)",
               run, timeout_s=90 if mode == "cuda_graph" else 240, estimate_s=15 if mode == "cuda_graph" else 80,
               cuda_only=f"{mode} runs on CUDA only (FastGenerator falls back to eager on a CPU)")


def compile_row() -> Row:
    def run(check: Check) -> Outcome:
        res = check.worker("compile_stage3", recipe=str(bench_recipe(check)), batch=1,
                           iters=2 if check.quick else 20, warmup=3)
        if not res["finite"]:
            raise RowFailure(f"a stage-3 loss is not finite after compile: {res['losses']}")
        return Outcome(f"compile + first {res['warmup']} steps {res['warmup_s']:.0f} s, then {res['iters_per_s']:.1f} "
                       f"it/s; {res['unique_graphs']} graphs, {res['graph_breaks']} graph breaks, "
                       f"{len(res['recompile_limit_hits'])} recompile-limit hits", res)

    return Row("compile/stage3", "train.compile: true (with bf16 and channels_last) for a few stage-3 iterations",
               run, timeout_s=300, estimate_s=120,
               cuda_only="inductor's compile of a whole stage-3 step takes minutes on a CPU; the CUDA run checks it")


def nccl_row() -> Row:
    def run(check: Check) -> Outcome:
        result = check.work / "results" / "nccl_probe.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.unlink(missing_ok=True)
        check.call([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                    "-m", "gancompress.cli", "gpu-check", "--device", "cuda", "--worker", "nccl_probe",
                    "--worker-args", "{}", "--out", str(result)], "torchrun")
        res = json.loads(result.read_text())
        if not res["ok"]:
            raise RowFailure("; ".join(res["problems"]))
        return Outcome(f"NCCL {res['nccl_version']}: all_reduce, broadcast, objects, barrier ok; SyncBatchNorm "
                       f"kernels vs BatchNorm max|diff| out {res['syncbn']['out_diff']:.2g}, grad "
                       f"{res['syncbn']['grad_diff']:.2g}", res)

    return Row("torchrun/nccl_probe", "torchrun, one process on NCCL: the collectives distributed.py uses and "
               "SyncBatchNorm's kernels", run, timeout_s=90, estimate_s=20, cuda_only="NCCL needs CUDA")


def torchrun_row(nproc: int) -> Row:
    gloo = nproc > 1

    def run(check: Check) -> Outcome:
        data = make_cityscapes_like(check.work / "data" / "aligned64", 16, 4, size=64)
        recipe = check.recipe("demo/pix2pix.yaml")
        device = "cpu" if gloo else check.device
        run_dir = check.work / "runs" / f"torchrun{nproc}"
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = {"data.root": data, "eval.segmenter": "", "sparse.epochs": 1, "distill.epochs_const": 1,
                "distill.epochs_decay": 0, "train.sync_bn": not gloo, "train.log_every": 2, "eval.latency": False}
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "gancompress.cli", "compress", str(recipe), "--device", device, "--run-dir", str(run_dir)]
        for key, value in sets.items():
            args += ["--set", set_override(key, value)]
        check.call(args, "torchrun")
        report = json.loads((run_dir / "report.json").read_text())
        names = list(report["generators"])
        missing = [str(p.relative_to(run_dir)) for p in stage_outputs(run_dir, names, False) if not p.is_file()]
        if missing:
            raise RowFailure(f"stage outputs missing: {', '.join(missing)}")
        note = ("gloo, 2 ranks" if gloo else "1 rank on cuda:0 with sync_bn; with one process no group is made "
                "(distributed.process_group), so NCCL and SyncBatchNorm are checked by torchrun/nccl_probe")
        details = {"ranks": nproc, "device": device, "student_gmacs": report["generators"]["G"]["student"]["macs"]}
        return Outcome(f"every stage finished ({note})", details)

    if gloo:
        return Row("torchrun/compress_2proc_gloo", "torchrun, 2 processes on gloo (--device cpu): compress end to end",
                   run, timeout_s=150, estimate_s=45)
    return Row("torchrun/compress_1proc", "torchrun --nproc_per_node=1 compress on CUDA with train.sync_bn: true",
               run, timeout_s=120, estimate_s=30, cuda_only="one CUDA process; the CPU form is compress_2proc_gloo")
