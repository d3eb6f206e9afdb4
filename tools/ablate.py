#!/usr/bin/env python
"""Run one recipe with each student discriminator and write the ablation table.

    python tools/ablate.py recipes/demo/pix2pix.yaml [--variants none plain gcc] [--set k=v] [--out DIR] [--resume]

Variants (gancompress/ablation.py): none, plain, selective-local, gcc, dmd, selective+dmd, glead.
The table goes to <output_dir>/<name>-ablation/ablation.md (and is printed).
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancompress.ablation import VARIANTS, run_ablation  # noqa: E402
from gancompress.errors import GanCompressError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="the recipe YAML file, e.g. recipes/demo/pix2pix.yaml")
    p.add_argument("--variants", nargs="+", default=None, metavar="KEY",
                   help=f"variants to run (default all: {' '.join(VARIANTS)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe key for every variant (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="ablation folder (default <output_dir>/<name>-ablation)")
    p.add_argument("--resume", action="store_true", help="continue the variants found in the folder")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        folder, _ = run_ablation(args.recipe, args.overrides, args.variants, args.out, args.resume, args.device)
    except GanCompressError as exc:
        print(f"ablate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ablate: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
    print((folder / "ablation.md").read_text(), end="")
    print(f"table: {folder / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
