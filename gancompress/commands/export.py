"""Export a generator file (e.g. runs/x/student/generator_G.pt) to TorchScript, ONNX, or a portable
state dict.

TorchScript (--out) and ONNX (--onnx) are checked against the eager generator and their largest
difference printed. --int8 takes a run folder instead (RUN_DIR): it quantizes each student for ONNX
Runtime, scores the int8 and fp32 files on the eval set, times them beside the teacher, and writes
export/generator.int8.onnx only when the metric is within export.int8_tolerance
(gancompress.run.int8). --state-dict writes the weights as a plain .pth of tensors with a JSON
architecture record (every layer's width) and portable_loader.py beside it: the net loads with
torch alone, without gancompress installed (python portable_loader.py g.json checks it).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GanCompressError
from .common import int_list

NAME = "export"
HELP = "export a student generator file to TorchScript, ONNX or a portable state dict, or a run's int8 student"
EXAMPLE = "gancompress export runs/demo_pix2pix --int8"


def add_arguments(p) -> None:
    p.add_argument("generator", type=Path, metavar="GENERATOR|RUN_DIR",
                   help="a generator file (e.g. runs/x/student/generator_G.pt), or with --int8 the run folder "
                        "(a directory, e.g. runs/x)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="TorchScript file to write (.pt)")
    p.add_argument("--onnx", type=Path, default=None, help="ONNX file to write (.onnx)")
    p.add_argument("--state-dict", type=Path, default=None, metavar="FILE.pth",
                   help="plain state dict + FILE.json architecture record + portable_loader.py beside it")
    p.add_argument("--int8", action="store_true",
                   help="RUN_DIR: write export/generator.int8.onnx (ONNX Runtime, static int8) if its metric is "
                        "within export.int8_tolerance of the fp32 student's; figures in export/int8.json")
    p.add_argument("--int8-tolerance", type=float, default=None, metavar="FRACTION",
                   help="with --int8: instead of the recipe's export.int8_tolerance, e.g. 0.05 (5 %% worse)")
    p.add_argument("--batch-sizes", type=int_list, default=[1], metavar="N,N",
                   help="with --int8: batch sizes of the latency rows (default 1)")


def _int8(args) -> int:
    from ..metrics.runtimes import format_rows
    from ..run.int8 import export_int8
    if not args.generator.is_dir():
        raise GanCompressError(f"export --int8: {args.generator} is not a folder; give the run folder "
                               f"(e.g. runs/demo_pix2pix), not a generator file")
    if args.out is not None or args.onnx is not None or args.state_dict is not None:
        raise GanCompressError("export --int8 writes into RUN_DIR/export/; drop --out, --onnx and --state-dict")
    tol = args.int8_tolerance
    if tol is not None and not 0.0 <= tol <= 1.0:
        raise GanCompressError(f"--int8-tolerance: expected a fraction in [0, 1] (0.02 is 2 %), got {tol}")
    record = export_int8(args.generator, tolerance=tol, batches=args.batch_sizes)
    for n, entry in record["generators"].items():
        v = entry["verdict"]
        print(f"{n}: int8 {v['key']} {v['int8']:.4g} vs fp32 {v['fp32']:.4g} ({v['worse_by']:+.1%} worse, "
              f"tolerance {v['tolerance']:.1%}): {entry['file']}")
        print(format_rows(entry["latency"]))
    print(f"figures: {args.generator / 'export' / 'int8.json'}")
    return 0


def run(args) -> int:
    from ..export.generator import export_torchscript, load_generator

    if args.int8:
        return _int8(args)
    if args.out is None and args.onnx is None and args.state_dict is None:
        raise GanCompressError("export: say what to write: --out FILE.pt (TorchScript), --onnx FILE.onnx and/or "
                               "--state-dict FILE.pth")
    generator, meta = load_generator(args.generator)
    family, name = meta["family"], meta["name"]
    shipped = family.for_export(generator)
    example = family.example_input(name, 1)
    if args.out is not None:
        info = export_torchscript(shipped, example, args.out)
        print(f"TorchScript: {info['path']} (max |diff| vs eager {info['max_abs_diff']:.2e})")
    if args.onnx is not None:
        from ..export.onnx_file import export_onnx, onnx_parity
        export_onnx(shipped, example, args.onnx, opset=meta["recipe"].export.opset)
        print(f"ONNX: {args.onnx} (max |diff| vs eager {onnx_parity(args.onnx, shipped, example):.2e})")
    if args.state_dict is not None:
        from ..export.portable import export_state_dict
        info = export_state_dict(shipped, args.state_dict, family=family.name, name=name, ngf=meta["ngf"],
                                 example=example)
        print(f"state dict: {info['weights']} + {info['record']} + {info['loader']} "
              f"(reloaded without gancompress: max |diff| {info['max_abs_diff']:.2e})")
    return 0
