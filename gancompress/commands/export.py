"""Export a generator file (e.g. runs/x/student/generator_G.pt) to TorchScript, and ONNX if asked.

Each export is checked against the eager generator and its largest difference printed.
"""
from __future__ import annotations

from pathlib import Path

NAME = "export"
HELP = "export a student generator file to TorchScript (and ONNX)"


def add_arguments(p) -> None:
    p.add_argument("generator", type=Path, help="a generator file, e.g. runs/x/student/generator_G.pt")
    p.add_argument("--out", type=Path, required=True, help="output TorchScript file (.pt)")
    p.add_argument("--onnx", type=Path, default=None, help="also write ONNX here")


def run(args) -> int:
    from ..export import export_torchscript, load_generator

    generator, meta = load_generator(args.generator)
    family, name = meta["family"], meta["name"]
    shipped = family.for_export(generator)
    example = family.example_input(name, 1)
    info = export_torchscript(shipped, example, args.out)
    print(f"TorchScript: {info['path']} (max |diff| vs eager {info['max_abs_diff']:.2e})")
    if args.onnx is not None:
        from ..onnx_export import export_onnx, onnx_parity
        export_onnx(shipped, example, args.onnx, opset=meta["recipe"].export.opset)
        print(f"ONNX: {args.onnx} (max |diff| vs eager {onnx_parity(args.onnx, shipped, example):.2e})")
    return 0
