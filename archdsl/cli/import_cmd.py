"""`archdsl import SPEC -o FILE.arch`: a PyTorch module as a readable .arch file (archdsl/importer)."""

from __future__ import annotations

from pathlib import Path

from ..errors import NO_LOC, ArchError
from .options import parse_input


def cmd_import(args) -> int:
    from ..importer import from_torch, load_callable, write_atomically

    out = Path(args.output)
    if out.suffix != ".arch":
        raise ArchError(f"-o {args.output}: the output is a .arch file", NO_LOC, hint="for example -o resnet50.arch")
    if not out.parent.is_dir():
        raise ArchError(f"-o {args.output}: no folder {out.parent}", NO_LOC)
    shape = parse_input(args.input) if args.input else (3, 224, 224)
    module = load_callable(args.spec)
    default_name = args.spec.rpartition(":")[2]
    name = args.name or (default_name if default_name.isidentifier() else None)
    text = from_torch(module, shape, name=name)  # raises before anything is written
    write_atomically(out, text)
    print(f"wrote {out} ({len(text.splitlines())} lines): network {text.split('network ', 1)[1].split()[0]}, "
          f"input {'x'.join(map(str, shape))}")
    return 0


def add_import_parser(sub) -> None:
    p = sub.add_parser("import", help="write a PyTorch module (torch.fx-traceable) as a .arch file",
                       description="Trace a PyTorch module with torch.fx and write it as a .arch file whose labels "
                       "are the module's paths, so that archdsl.build_torch(FILE) loads its state_dict() "
                       "with strict=True. Nothing is written when the module cannot be expressed (exit status 2).")
    p.add_argument("spec", metavar="SPEC", help="package.module:callable or path/to/file.py:callable, called "
                   "with no arguments to make the module (e.g. torchvision.models:resnet50)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.arch", help="the file to write")
    p.add_argument("--input", metavar="CxHxW", help="the input shape to trace with (default 3x224x224)")
    p.add_argument("--name", help="the network's name (default: the callable's)")
    p.set_defaults(run=cmd_import)
