"""Where a run computes: the device, and the precision its matrix products use there."""
from __future__ import annotations

import ctypes
import functools
import os
import re
from contextlib import nullcontext

import torch

from .config import ConfigError


def device_kind(name: str) -> str:
    """The kind of device a run's `device` names: `auto` is CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def resolve_device(name: str, distributed: bool = False) -> torch.device:
    """The device of `device_kind`; under torchrun, this process's GPU."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    name = device_kind(name)
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError("device", f"is {name}, but no {name.upper()} device is available here")
    if name == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) if distributed else 0)
    return torch.device(name)


def device_label(device: torch.device, precision: torch.dtype | None = None) -> str:
    """The device, bf16 where used, and on the CPU the calling thread's torch threads."""
    parts = [f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type]
    if precision == torch.bfloat16:
        parts.append("bf16")
    if device.type == "cpu":
        threads = torch.get_num_threads()
        parts.append(f"{threads} thread{'s' if threads > 1 else ''}")
    return ", ".join(parts)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 256 << 20  # free heap memory kept for reuse instead of handed back to the system
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling: larger blocks always get their own mapping


@functools.cache
def keep_freed_memory() -> bool:
    """Stop glibc handing each step's freed tensors back to the system, only to fault them in again.

    A training step allocates and frees the same few megabytes of activations over and over. In the
    main thread, glibc's default returns them (trimming the heap or unmapping the block) and the next
    step takes every page again as a page fault: about 145,000 a second on the fast preset, which ran
    20-30% slower in the main thread (the CLI) than in a worker thread (the page), whose heap keeps
    them. Setting both thresholds (which also stops glibc adjusting them) keeps freed blocks up to 32 MB
    in the heap for reuse.
    False where the C library has no mallopt (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


@functools.cache
def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX or AVX512-BF16), read from Linux's flags.

    Only there is bf16 faster than float32 (the book's recipe: 2x on a 2-core Xeon with AMX, 1.4x on a
    2-core Zen 4 EPYC with AVX512-BF16; bench/results/throughput-cpu.md); elsewhere oneDNN emulates it
    and it is slower.
    """
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def multiplies_bf16(device: torch.device) -> bool:
    """A CPU with bf16 instructions, or a CUDA GPU from Ampere on: there cuDNN's bf16 recurrent
    kernels train the book's recipe 1.7x faster than float32 on an H200 (bench/results/throughput-cuda.md)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_multiplies_bf16()


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `name` on `device`; None means plain float32.

    `auto` uses bf16 only where the device multiplies it in hardware. Weights, optimizer state, the
    loss and gradients stay float32 either way; only the products inside the layers round to bf16.
    """
    if name == "fp32" or (name == "auto" and not multiplies_bf16(device)):
        return None
    if device.type == "mps":
        raise ConfigError("precision", "bf16 is not offered on MPS; use fp32 or auto")
    if device.type == "cpu" and not cpu_multiplies_bf16():
        # oneDNN's LSTM kernel has no bf16 form without these instructions: the run would fail at
        # its first step with "could not create a primitive descriptor" (torch 2.13 on an AMD EPYC).
        raise ConfigError("precision", "bf16 needs a CPU with bf16 instructions (AMX or AVX512-BF16), "
                                       "which this one lacks; use fp32 or auto")
    return torch.bfloat16


def autocast(device: torch.device, precision: torch.dtype | None, cache_weights: bool = False):
    """The context a forward pass runs in: bf16 autocast, or nothing. A training step keeps no cache of
    cast weights: a CUDA graph cannot record one, and each weight is cast once per pass anyway. The views
    keep one: a sample passes each weight a hundred times."""
    if precision is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=precision, cache_enabled=cache_weights)


def describe_out_of_memory(err: BaseException) -> str | None:
    """What to tell the user of an allocation that the device refused (torch's OutOfMemoryError on a
    GPU, the CPU allocator's RuntimeError), or None for any other error. Such a run had ended the CLI
    with a traceback."""
    text = str(err)
    if not (isinstance(err, torch.OutOfMemoryError) or
            (isinstance(err, RuntimeError) and "can't allocate memory" in text)):
        return None
    asked = ""
    if found := re.search(r"[Tt]ried to allocate (?:(\d+) bytes|([\d.]+ [KMGT]iB))", text):  # the CPU's, CUDA's
        asked = f" (it asked for {found.group(2) or f'{int(found.group(1)) / 2**30:.2f} GiB'} at once)"
    return (f"out of memory{asked}: the weights, and the activations of a minibatch, which grow with batch x "
            "steps x hidden units x layers, did not fit; lower some of them")
