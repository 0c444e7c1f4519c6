"""Naming the machine a benchmark ran on."""
import platform

import torch

__all__ = ['machine_name']


def _cpu_model() -> str:
    """The CPU model as /proc/cpuinfo names it (Linux), else the architecture."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine_name(device: str, threads: int = 0) -> str:
    """``'NVIDIA H200'`` for CUDA; ``'<cpu model>, N threads'`` for the CPU."""
    if device == 'cuda':
        return torch.cuda.get_device_name()
    return f'{_cpu_model()}, {threads or torch.get_num_threads()} threads'
