"""What the machine can compute fast: CPU features and GPUs, probed once per process.

Backends and the ``auto`` choice ask these functions (never the flags directly), so a
test can simulate another machine by monkeypatching one function, e.g.
``monkeypatch.setattr(hardware, 'cpu_supports_bf16', lambda: False)``.
"""

from __future__ import annotations

import functools
import platform
import re


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        with open('/proc/cpuinfo', encoding='ascii', errors='replace') as file:
            for line in file:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AMX-BF16 or AVX512-BF16).

    Without it bf16 is emulated and slower than fp32, so bf16 is refused there.
    """
    return bool({'amx_bf16', 'avx512_bf16'} & cpu_flags())


def cpu_supports_amx() -> bool:
    """True when the CPU has AMX tiles (bf16/int8 matrix units, Sapphire Rapids and later)."""
    return 'amx_tile' in cpu_flags()


@functools.cache
def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo`` ``model name``, else ``platform.processor()``)."""
    try:
        with open('/proc/cpuinfo', encoding='ascii', errors='replace') as file:
            for line in file:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown-cpu'


def cpu_key() -> str:
    """The CPU name and its bf16/AMX ability as a file-name-safe string (for cache keys)."""
    features = '-'.join(f for f, ok in (('bf16', cpu_supports_bf16()),
                                        ('amx', cpu_supports_amx())) if ok) or 'base'
    return re.sub(r'[^A-Za-z0-9]+', '-', f'{cpu_name()}-{features}').strip('-')


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def openvino_available() -> bool:
    """True when the ``openvino`` package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True
