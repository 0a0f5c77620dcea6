"""GPU compile checks that need no GPU: Triton kernels compiled ahead of time for an sm, CUDA files
compiled by nvcc, and the registers / spills / shared memory ptxas reports for each kernel.

    compile_triton("pkg.module:kernel", signature, constexprs, capability, num_warps)
        -> CompiledTriton(ptx, cubin, shared_bytes, resources)
    ptxas_resources(cu_file, sm or [sms]) -> list[KernelResources]
    write_report(name, payload) -> Path of build/gpu_compile/<name>.json

Environment notes for a CPU-only machine:
- Triton compiles in a child process without TRITON_INTERPRET: with it set, `@triton.jit` returns
  interpreter objects that the compiler cannot take (the test session sets it when there is no GPU).
- No driver is needed: `triton.compile(..., target=GPUTarget("cuda", cc, 32))` runs the whole
  pipeline to PTX and cubin with the ptxas that ships with triton. Triton does not ask ptxas for a
  resource report unless TRITON_DUMP_PTXAS_LOG=1, which the child sets.
- nvcc needs the CUDA headers of the `nvidia` pip packages (cusparse.h, ...), the same include
  directories setup.py adds.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT_DIR = ROOT / "build" / "gpu_compile"
# The macros setup.py passes to nvcc for the extension.
NVCC_DEFINES = ["-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DRTMO_WITH_CUDA"]
# setup.py's nvcc flags (torch's BuildExtension adds its COMMON_NVCC_FLAGS in front).
NVCC_FLAGS = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]


@dataclass(frozen=True)
class KernelResources:
    """What ptxas reports for one kernel entry on one sm."""

    kernel: str
    sm: int
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int


@dataclass(frozen=True)
class CompiledTriton:
    """One Triton kernel compiled ahead of time."""

    ptx: str
    cubin: bytes
    shared_bytes: int
    resources: KernelResources


def find_nvcc() -> str | None:
    """nvcc of the toolkit setup.py would use (CUDA_HOME, else /usr/local/cuda, else PATH)."""
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for 'sm_(?P<sm>\d+)a?'")
_FRAME = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
    r"(?P<loads>\d+) bytes spill loads"
)
_USED = re.compile(r"Used (?P<regs>\d+) registers(?P<rest>.*)")
_SMEM = re.compile(r"(?P<smem>\d+) bytes smem")


def parse_ptxas(log: str) -> list[KernelResources]:
    """Per-kernel resources from `ptxas -v` output (nvcc -Xptxas -v prints the same lines)."""
    found, current = [], None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current = {"kernel": m["name"], "sm": int(m["sm"]), "shared_bytes": 0}
        elif current is not None and (m := _FRAME.search(line)):
            current.update(
                stack_bytes=int(m["stack"]),
                spill_stores=int(m["stores"]),
                spill_loads=int(m["loads"]),
            )
        elif current is not None and (m := _USED.search(line)):
            current["registers"] = int(m["regs"])
            if s := _SMEM.search(m["rest"]):
                current["shared_bytes"] = int(s["smem"])
            found.append(KernelResources(**current))
            current = None
    return found


def _nvidia_include_dirs() -> list[str]:
    dirs = []
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "include"))
    return sorted(set(dirs))


def ptxas_resources(cu_file: str | Path, sm: int | Sequence[int]) -> list[KernelResources]:
    """Compiles `cu_file` (device code, into a temporary directory) for sm_<sm> with the extension's
    flags and returns ptxas's report for every kernel and sm. Several sms share one nvcc run: the
    parse of the torch headers dominates the time. Raises CalledProcessError on errors."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    sms = [sm] if isinstance(sm, int) else list(sm)
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (CUDA_HOME, /usr/local/cuda, PATH)")
    includes = [
        str(ROOT / "csrc"),
        *include_paths(device_type="cuda"),
        *_nvidia_include_dirs(),
        sysconfig.get_paths()["include"],
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            nvcc,
            *COMMON_NVCC_FLAGS,
            *NVCC_FLAGS,
            *NVCC_DEFINES,
            *(f"-gencode=arch=compute_{s},code=sm_{s}" for s in sms),
            "-Xptxas",
            "-v",
            *(f"-I{d}" for d in includes),
            # Device code only: the host compile of the torch headers would double the time.
            "--fatbin",
            str(cu_file),
            "-o",
            os.path.join(tmp, "kernel.fatbin"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)
    return parse_ptxas(done.stdout + done.stderr)


def _compile_triton_here(
    fn_path: str, signature: dict, constexprs: dict, capability: int, options: dict
) -> dict:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget

    module, name = fn_path.split(":")
    fn = getattr(importlib.import_module(module), name)
    source = triton.compiler.ASTSource(fn, signature, constexprs)
    # TRITON_DUMP_PTXAS_LOG=1 (set by the parent) prints the report of Triton's own ptxas run.
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)
    ptx, cubin = compiled.asm["ptx"], compiled.asm["cubin"]
    (resources,) = [r for r in parse_ptxas(log.getvalue()) if r.kernel == fn.__name__]
    return {
        "ptx": ptx,
        "cubin": base64.b64encode(cubin).decode(),
        "shared_bytes": compiled.metadata.shared,
        "resources": asdict(resources),
    }


def compile_triton(
    fn_path: str,
    signature: dict,
    constexprs: dict,
    capability: int,
    num_warps: int,
    options: dict | None = None,
) -> CompiledTriton:
    """Compiles the @triton.jit function `fn_path` ("package.module:function") for sm_<capability>.

    signature maps every argument to its Triton type ("*fp32", "i32", "fp64", "constexpr");
    constexprs gives the constexpr values; options are the launch's other compile options (e.g.
    enable_fp_fusion), so the checked program is the one the dispatcher launches. Runs in a child
    process without TRITON_INTERPRET.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DUMP_PTXAS_LOG"] = "1"
    env["TRITON_ALWAYS_COMPILE"] = "1"  # a cache hit would skip ptxas and its report
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    compile_options = {**(options or {}), "num_warps": num_warps}
    request = json.dumps([fn_path, signature, constexprs, capability, compile_options])
    script = (
        "import json, sys; from gpu_compile import _compile_triton_here; "
        "print(json.dumps(_compile_triton_here(*json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, request], capture_output=True, text=True, env=env
    )
    if done.returncode:
        raise RuntimeError(
            f"triton.compile of {fn_path} for sm_{capability} failed:\n{done.stderr}"
        )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return CompiledTriton(
        ptx=out["ptx"],
        cubin=base64.b64decode(out["cubin"]),
        shared_bytes=out["shared_bytes"],
        resources=KernelResources(**out["resources"]),
    )


def write_report(name: str, payload: object) -> Path:
    """Writes build/gpu_compile/<name>.json (untracked: build/ is ignored)."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=asdict))
    return path
