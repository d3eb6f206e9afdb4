"""Export a generator file (e.g. runs/x/student/generator_G.pt) to TorchScript, ONNX, or a portable
state dict.

TorchScript (--out) and ONNX (--onnx) are checked against the eager generator and their largest
difference printed. --state-dict writes the weights as a plain .pth of tensors with a JSON
architecture record (every layer's width) and portable_loader.py beside it: the net loads with
torch alone, without gancompress installed (python portable_loader.py g.json checks it).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GanCompressError

NAME = "export"
HELP = "export a student generator file to TorchScript, ONNX or a portable state dict"


def add_arguments(p) -> None:
    p.add_argument("generator", type=Path, help="a generator file, e.g. runs/x/student/generator_G.pt")
    p.add_argument("--out", type=Path, default=None, help="TorchScript file to write (.pt)")
    p.add_argument("--onnx", type=Path, default=None, help="ONNX file to write (.onnx)")
    p.add_argument("--state-dict", type=Path, default=None, metavar="FILE.pth",
                   help="plain state dict + FILE.json architecture record + portable_loader.py beside it")


def run(args) -> int:
    from ..export.generator import export_torchscript, load_generator

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
