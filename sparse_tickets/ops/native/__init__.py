"""The compiled backends: ``cpu`` (C++ with OpenMP, kernels/csrc/cpu) and ``cuda``
(kernels/csrc/cuda), registered as torch ops (:mod:`.library`) and built on first use
(:mod:`.extension`)."""

from .backend import NativeBackend, cpu_backend, cuda_backend

__all__ = ["NativeBackend", "cpu_backend", "cuda_backend"]
