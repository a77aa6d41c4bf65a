"""Write the headers the C sources need that a C macro cannot make: every algorithm
header once (fusedopt_algorithms.h), one instantiation block per kernels.def row
(fusedopt_instances.h, included by each ISA file), and the 8-bit quantization
tables (fusedopt_qmaps.h) from their one definition, src/fusedopt/_qmap.py.

setup.py calls this at build time; standalone: ``python csrc/generate.py OUTDIR``.
"""
import re
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent.resolve()
KERNEL_ROW = re.compile(r"^\s*KERNEL\(\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\)",
                        re.MULTILINE)
QMAP = HERE.parent / "src" / "fusedopt" / "_qmap.py"


def kernel_rows():
    """(algorithm, param storage, grad storage, state storage) of every row of kernels.def."""
    rows = KERNEL_ROW.findall((HERE / "kernels.def").read_text())
    if not rows:
        raise RuntimeError("csrc/kernels.def lists no KERNEL(...) rows")
    return rows


def write_kernel_instances(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = kernel_rows()
    algorithms = list(dict.fromkeys(row[0] for row in rows))
    header = "/* written by csrc/generate.py from csrc/kernels.def */\n"
    (out_dir / "fusedopt_algorithms.h").write_text(
        header + "".join(f'#include "algorithms/{a}.h"\n' for a in algorithms))
    blocks = [
        f"#define FO_ALGORITHM {algorithm}\n#define FO_PARAM_STORAGE {param_storage}\n"
        f"#define FO_GRAD_STORAGE {grad_storage}\n#define FO_STATE_STORAGE {state_storage}\n"
        f'#include "runtime/instance.h"\n#include "algorithms/{algorithm}.h"\n'
        f'#include "runtime/instance_end.h"\n'
        "#undef FO_ALGORITHM\n#undef FO_PARAM_STORAGE\n#undef FO_GRAD_STORAGE\n#undef FO_STATE_STORAGE\n"
        for algorithm, param_storage, grad_storage, state_storage in rows
    ]
    (out_dir / "fusedopt_instances.h").write_text(header + "\n".join(blocks))
    write_quantization_tables(out_dir)


def _c_array(ctype, name, values, fmt):
    body = ",".join(("\n    " if k % 8 == 0 else " ") + fmt(v) for k, v in enumerate(values))
    return f"static const {ctype} {name}[{len(values)}] = {{{body}\n}};\n"


def write_quantization_tables(out_dir):
    """fusedopt_qmaps.h: each map's constants (storage/q8.h runs the arithmetic)."""
    qmap = runpy.run_path(str(QMAP))
    as_float = lambda v: float(v).hex() + "f"
    text = ["/* written by csrc/generate.py from src/fusedopt/_qmap.py */\n",
            f"#define FO_Q8_BLOCK {qmap['BLOCK']}\n#define FO_Q8_DECADES {qmap['DECADES']}\n"]
    for kind, signed in (("signed", True), ("unsigned", False)):
        c = qmap["constants"](signed)
        text.append(f"static const fo_q8_map fo_q8_{kind} = {{\n    {int(signed)}, {qmap['ZERO'][signed]},\n")
        for name, fmt in (("count", str), ("base", str), ("first", as_float), ("step", as_float),
                          ("inverse", as_float), ("bound", as_float)):
            text.append("    {" + ", ".join(fmt(v) for v in c[name]) + f"}},  /* {name} */\n")
        text.append("    {" + ", ".join(as_float(v) for v in qmap["dynamic_map"](signed)) + "},  /* value */\n")
        text.append("};\n")
    (Path(out_dir) / "fusedopt_qmaps.h").write_text("".join(text))
