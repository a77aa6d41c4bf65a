"""Write the two headers that csrc/kernels.def's rows need #include for (which a C
macro cannot do): every algorithm header once (fusedopt_algorithms.h) and one
instantiation block per row (fusedopt_instances.h, included by each ISA file).

setup.py calls this at build time; standalone: ``python csrc/generate.py OUTDIR``.
"""
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent.resolve()
KERNEL_ROW = re.compile(r"^\s*KERNEL\(\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*\)", re.MULTILINE)


def kernel_rows():
    """(algorithm, param storage, state storage) of every row of kernels.def."""
    rows = KERNEL_ROW.findall((HERE / "kernels.def").read_text())
    if not rows:
        raise RuntimeError("csrc/kernels.def lists no KERNEL(...) rows")
    return rows


def write_kernel_instances(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = kernel_rows()
    algorithms = list(dict.fromkeys(algorithm for algorithm, _, _ in rows))
    header = "/* written by csrc/generate.py from csrc/kernels.def */\n"
    (out_dir / "fusedopt_algorithms.h").write_text(
        header + "".join(f'#include "algorithms/{a}.h"\n' for a in algorithms))
    blocks = [
        f"#define FO_ALGORITHM {algorithm}\n#define FO_PARAM_STORAGE {param_storage}\n"
        f"#define FO_STATE_STORAGE {state_storage}\n"
        f'#include "runtime/instance.h"\n#include "algorithms/{algorithm}.h"\n'
        f'#include "runtime/instance_end.h"\n'
        "#undef FO_ALGORITHM\n#undef FO_PARAM_STORAGE\n#undef FO_STATE_STORAGE\n"
        for algorithm, param_storage, state_storage in rows
    ]
    (out_dir / "fusedopt_instances.h").write_text(header + "\n".join(blocks))


if __name__ == "__main__":
    write_kernel_instances(sys.argv[1])
