"""Build of rtmo_kernels._C: the C++ CPU kernels always, the CUDA kernels when they can be compiled.

Environment:
  RTMO_SKIP_EXT=1        build no extension (the pure-PyTorch reference and Triton paths still work)
  RTMO_FORCE_CUDA=1      compile the CUDA kernels even when torch reports no CUDA toolkit
  TORCH_CUDA_ARCH_LIST   target architectures (default "8.0;9.0")
"""

import glob
import os
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _nvidia_include_dirs() -> list[str]:
    """Headers such as cusparse.h ship in the `nvidia` pip packages, not in a system toolkit."""
    dirs = []
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "include"))
    return sorted(set(dirs))


def _find_cuda_home() -> str | None:
    """The toolkit root; /usr/local/bin/nvcc may be a wrapper script, so prefer the real tree."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    nvcc = shutil.which("nvcc")
    return str(Path(nvcc).resolve().parent.parent) if nvcc else None


def _extensions():
    if os.environ.get("RTMO_SKIP_EXT") == "1":
        print("rtmo_kernels build: RTMO_SKIP_EXT=1, building no extension")
        return [], {}
    cuda_home = _find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    force_cuda = os.environ.get("RTMO_FORCE_CUDA") == "1"
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
    with_cuda = force_cuda or (torch.version.cuda is not None and nvcc is not None)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)

    sources = ["csrc/rtmo_ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cxx_flags = ["-O3", "-fopenmp", "-std=c++20"]
    macros = []
    include_dirs = [str(ROOT / "csrc")]
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        macros.append(("RTMO_WITH_CUDA", None))
        include_dirs += _nvidia_include_dirs()
    print(
        "rtmo_kernels build: "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), nvcc {nvcc or 'not found'}, "
        f"CUDA kernels {'ON' if with_cuda else 'OFF'}"
        f"{' (RTMO_FORCE_CUDA=1)' if force_cuda else ''}, "
        f"archs {os.environ['TORCH_CUDA_ARCH_LIST'] if with_cuda else '-'}, "
        f"{len(sources)} sources"
    )
    ext_cls = CUDAExtension if with_cuda else CppExtension
    extra = {"cxx": cxx_flags}
    if with_cuda:
        extra["nvcc"] = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
    ext = ext_cls(
        name="rtmo_kernels._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="rtmo",
    version="0.1.0",
    description="RTMO multi-person pose estimation with fused DCC and NMS kernels",
    python_requires=">=3.10",
    packages=find_packages(include=["rtmo", "rtmo.*", "rtmo_kernels", "rtmo_kernels.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["torch>=2.6", "numpy", "opencv-python-headless"],
    extras_require={
        "triton": ["triton"],
        "onnx": ["onnx", "onnxruntime"],
        "eval": ["pycocotools"],
        "ray": ["ray[data]>=2.60", "pyarrow"],
    },
    entry_points={"console_scripts": ["rtmo = rtmo.cli:main"]},
)
