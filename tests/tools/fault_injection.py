"""Faults for the kill/resume tests of tools/train.py, switched on by environment variables in a run whose config
imports this module (``custom_imports = dict(imports=['fault_injection'])``, with tests/tools on PYTHONPATH).

* ``ATTNZOO_TEST_KILL_WRITING=NAME[:N]``: SIGKILL the process during its N-th (default 1st) opening for writing
  of a file whose name starts with NAME (``epoch_2.pth`` also matches ``epoch_2.pth.part``): half of the first
  write reaches the disk (flushed), then the process dies. A kill in the middle of a save, at a chosen file.
* ``ATTNZOO_TEST_SLEEP_BEFORE_EPOCH=E:SECONDS``: sleep before training epoch E (1-based), training time that a
  resumed run's summary must count.
"""
import builtins
import os
import os.path as osp
import signal
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

_open = builtins.open


class _DyingFile:
    """A file opened for writing whose first ``write`` stores half the data, flushes, and SIGKILLs the process."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def _install_kill_writing(spec: str) -> None:
    name, _, nth = spec.partition(':')
    remaining = [int(nth or 1)]

    def open_and_maybe_die(file, mode='r', *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and set(mode) & set('wax') \
                and osp.basename(os.fspath(file)).startswith(name):
            remaining[0] -= 1
            if remaining[0] == 0:
                return _DyingFile(f)
        return f

    builtins.open = open_and_maybe_die


if os.environ.get('ATTNZOO_TEST_KILL_WRITING'):
    _install_kill_writing(os.environ['ATTNZOO_TEST_KILL_WRITING'])


@HOOKS.register_module()
class SleepBeforeEpochHook(Hook):
    """Sleeps ``SECONDS`` before training epoch ``E`` when ``ATTNZOO_TEST_SLEEP_BEFORE_EPOCH=E:SECONDS``."""

    def before_train_epoch(self, runner) -> None:
        epoch, _, seconds = os.environ.get('ATTNZOO_TEST_SLEEP_BEFORE_EPOCH', '0:0').partition(':')
        if runner.epoch + 1 == int(epoch):
            time.sleep(float(seconds))
