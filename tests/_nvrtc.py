"""NVRTC through ctypes, from the ``nvidia-cuda-nvrtc-cu12`` wheel: CUDA C++ compiled to PTX
on a machine without a GPU (and without CuPy), as the CuPy kernels' tests need."""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path


def library_path() -> Path | None:
    """The wheel's ``libnvrtc.so.12``, or None where it is not installed."""
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder, "lib").glob("libnvrtc.so*"))
        if found:
            return found[0]
    return None


def compile_ptx(source: str, name: str, options: list[str]) -> str:
    """The PTX of ``source``; a RuntimeError holding NVRTC's log if it does not compile."""
    path = library_path()
    if path is None:
        raise RuntimeError("libnvrtc is not installed (pip install nvidia-cuda-nvrtc-cu12)")
    lib = ctypes.CDLL(str(path))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    program = ctypes.c_void_p()

    def check(status: int) -> None:
        if status != 0:
            raise RuntimeError(lib.nvrtcGetErrorString(status).decode())

    check(lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0,
                                 None, None))  # fmt: skip
    try:
        encoded = [o.encode() for o in options]
        status = lib.nvrtcCompileProgram(
            program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded)
        )
        if status != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(program, log)
            raise RuntimeError(log.value.decode(errors="replace"))
        size = ctypes.c_size_t()
        check(lib.nvrtcGetPTXSize(program, ctypes.byref(size)))
        ptx = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetPTX(program, ptx))
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
