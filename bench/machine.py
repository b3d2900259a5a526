"""What the bench ran on: CPU model, the instruction-set flags that decide the CNN's speed, versions."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

# The flags that decide which CNN kernels a CPU can run (f32 AVX2/AVX-512, bf16, int8 VNNI, AMX tiles).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def parse_cpuinfo(text: str) -> dict:
    """CPU model and its flags (the first processor's) from the text of /proc/cpuinfo."""
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"cpu": model, "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS}}


def cpu_description() -> dict:
    """This machine's CPU (model, cores available to this process, flags) and what OpenVINO makes of it."""
    from framecache.extract.engines import available_cores

    path = Path("/proc/cpuinfo")
    description = parse_cpuinfo(path.read_text()) if path.exists() else {"cpu": platform.processor() or "unknown", "cpu_flags": {}}
    description["cores"] = available_cores()
    try:
        from framecache.extract.engines import import_openvino

        core = import_openvino().Core()
        description["openvino_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        description["openvino_cpu"] = core.get_property("CPU", "FULL_DEVICE_NAME")
    except Exception as error:  # no OpenVINO: the TensorFlow fallback is benchmarked
        description["openvino_capabilities"] = f"unavailable ({type(error).__name__})"
    return description


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("tensorflow", "tensorflow-cpu", "keras", "openvino", "av", "numpy"):
        with contextlib.suppress(PackageNotFoundError):  # not installed: left out
            found[package] = version(package)
    found["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    return found


def format_cpu(description: dict) -> str:
    """One line: model, cores, the flags it has, OpenVINO's capabilities."""
    flags = [flag for flag, present in description.get("cpu_flags", {}).items() if present]
    missing = [flag for flag, present in description.get("cpu_flags", {}).items() if not present]
    capabilities = description.get("openvino_capabilities")
    capabilities = ", ".join(capabilities) if isinstance(capabilities, list) else capabilities
    return (
        f"{description.get('cpu')}, {description.get('cores')} cores; flags: {' '.join(flags) or 'none'}"
        f" (not: {' '.join(missing) or '-'}); OpenVINO CPU capabilities: {capabilities}"
    )
