"""Training state that survives a kill at any moment: atomic checkpoints and the choice of the file to resume.

* :class:`AtomicLocalBackend` (mmengine file backend ``'atomic_local'``): ``put`` / ``put_text`` write a
  ``<name>.part`` file in the target's folder, flush and fsync it, then ``os.replace`` it onto the target, so a
  reader sees the old file or the complete new one, never a part. Inside :meth:`~AtomicLocalBackend.removals_deferred`
  its ``remove`` / ``rmtree`` wait until the block has finished without an error.
* :class:`AtomicCheckpointHook` (``HOOKS``): mmengine's ``CheckpointHook`` writing through that backend. Every file
  it writes (epoch / iteration checkpoints, best checkpoints, the ``last_checkpoint`` pointer) is atomic, and a
  checkpoint that falls out of ``max_keep_ckpts`` (or a previous best) is deleted only after its successor and the
  pointer are complete. It is the checkpoint hook of ``configs/_base_/default_runtime.py`` and of every config.
* :func:`configure_resume`: ``tools/train.py --resume``: picks the newest checkpoint of the work dir that loads,
  skipping (with a warning naming them) the ones that do not; rank 0 decides and every rank resumes that file.

A kill therefore costs at most the work since the last complete checkpoint: with epoch checkpoints, the epoch in
progress (and one epoch when the kill falls in the save that ends it).
"""
import glob
import logging
import os
import os.path as osp
import re
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple, Union

from mmengine.dist import broadcast_object_list, init_dist, is_distributed, is_main_process
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from attnzoo.utils.checkpoint import CheckpointError, load_checkpoint

__all__ = ['PARTIAL_SUFFIX', 'POINTER', 'write_atomically', 'AtomicLocalBackend', 'AtomicCheckpointHook',
           'resume_candidates', 'find_resume_checkpoint', 'configure_resume']

PARTIAL_SUFFIX = '.part'  # a file being written: <name>.part, renamed to <name> once complete
POINTER = 'last_checkpoint'  # mmengine's file in the work dir naming the latest checkpoint
ATOMIC_BACKEND = 'atomic_local'
_RESUMABLE = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')  # CheckpointHook's default file names


# --------------------------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------------------------
def _fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder and needs no such step)."""
    if os.name != 'posix':
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill at any moment leaves the old file or the complete new one:
    ``<path>.part`` in the same folder, flushed and fsynced, then ``os.replace``-d onto ``path``."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = path + PARTIAL_SUFFIX
    with open(partial, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    _fsync_dir(folder)


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local-disk backend whose writes are atomic (:func:`write_atomically`) and whose removals can be
    held back until a block of writes is complete (:meth:`removals_deferred`)."""

    def __init__(self):
        super().__init__()
        self._deferred: Optional[List[Tuple[str, str]]] = None  # (method, path) held back; None: not deferring

    def put(self, obj: bytes, filepath) -> None:
        self._forget_removal(str(filepath))
        write_atomically(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)

    def remove(self, filepath) -> None:
        self._remove_later('remove', str(filepath))

    def rmtree(self, dir_path) -> None:
        self._remove_later('rmtree', str(dir_path))

    @contextmanager
    def removals_deferred(self) -> Iterator[None]:
        """Hold back ``remove`` / ``rmtree`` calls inside the block and run them when it ends without an error (an
        error leaves every file in place); a path written again inside the block is not removed. Nested blocks
        defer to the outermost one."""
        if self._deferred is not None:
            yield
            return
        self._deferred = []
        try:
            yield
            pending = self._deferred
        finally:
            self._deferred = None
        for method, path in pending:
            getattr(super(), method)(path)

    def _remove_later(self, method: str, path: str) -> None:
        if self._deferred is None:
            getattr(super(), method)(path)
        else:
            self._deferred.append((method, path))

    def _forget_removal(self, path: str) -> None:
        if self._deferred:
            self._deferred[:] = [(m, p) for m, p in self._deferred if p != path]


def remove_partial_files(folder: str) -> List[str]:
    """Delete the ``*.part`` files a killed save left in ``folder``; returns their paths."""
    paths = sorted(glob.glob(osp.join(glob.escape(folder), '*' + PARTIAL_SUFFIX)))
    for path in paths:
        os.remove(path)
    return paths


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) whose checkpoints survive a kill at any moment.

    Every file goes through :class:`AtomicLocalBackend`: a checkpoint, a best checkpoint and the ``last_checkpoint``
    pointer are each written to ``<name>.part`` and renamed when complete; the checkpoint leaving
    ``max_keep_ckpts`` and a replaced best checkpoint are deleted after the new checkpoint and the pointer are
    complete. Rank 0 writes. ``*.part`` files of a killed earlier run are removed before training; a kill between
    a save and the deletion it allows leaves the older checkpoint in place (one file more than ``max_keep_ckpts``,
    never one less). Local folders only: ``backend_args`` / ``file_client_args`` (remote storage) are refused.
    """

    def __init__(self, *args, backend_args: Optional[dict] = None, file_client_args: Optional[dict] = None,
                 **kwargs):
        for name, value in (('backend_args', backend_args), ('file_client_args', file_client_args)):
            if value is not None:
                raise ValueError(f'AtomicCheckpointHook writes to a local folder and takes no {name} (got '
                                 f'{value!r}); use mmengine\'s CheckpointHook for remote storage')
        super().__init__(*args, backend_args=dict(backend=ATOMIC_BACKEND), **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process():
            for folder in {self.out_dir, runner.work_dir}:
                for path in remove_partial_files(folder):
                    runner.logger.info(f'Removed {path}, the part of a save that was interrupted')

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        """Save ``filename_tmpl.format(step)``, then point ``last_checkpoint`` at it, then delete the checkpoint
        that leaves ``max_keep_ckpts`` (mmengine deletes first and rewrites the pointer in place)."""
        with self.file_backend.removals_deferred():
            self._rotate_kept(runner, step)
            filename = self.filename_tmpl.format(step)
            self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
            runner.message_hub.update_info('last_ckpt', self.last_ckpt)
            runner.save_checkpoint(self.out_dir, filename, save_optimizer=self.save_optimizer,
                                   save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                                   backend_args=self.backend_args, **self.args)
            if is_main_process():
                self.file_backend.put_text(self.last_ckpt, osp.join(runner.work_dir, POINTER))
                runner.logger.info(f'Saved checkpoint {self.last_ckpt}')

    def _save_best_checkpoint(self, runner, metrics: dict) -> None:
        """mmengine's best-checkpoint save, with the previous best deleted only after the new one is complete."""
        with self.file_backend.removals_deferred():
            super()._save_best_checkpoint(runner, metrics)

    def _rotate_kept(self, runner, step: int) -> None:
        """Append ``step`` to the kept checkpoint ids and remove (deferred) the one that falls out of
        ``max_keep_ckpts``; the ids live in the message hub, so they survive a resume."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            expired = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
            if is_main_process() and self.file_backend.exists(expired):  # a folder: saved by DeepSpeed
                remove = self.file_backend.rmtree if self.file_backend.isdir(expired) else self.file_backend.remove
                remove(expired)
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))


# --------------------------------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------------------------------
def _pointer_target(work_dir: str) -> Optional[str]:
    """The path ``<work_dir>/last_checkpoint`` names (mmengine writes it absolute), or None if absent or empty."""
    try:
        with open(osp.join(work_dir, POINTER)) as f:
            target = f.read().strip()
    except FileNotFoundError:
        return None
    return target or None


def resume_candidates(work_dir: str) -> List[str]:
    """The checkpoints of ``work_dir`` a resume may use, newest first: every ``epoch_<n>.pth`` / ``iter_<n>.pth``
    and the file ``last_checkpoint`` names, ordered by the step ``n`` in the name, then by modification time (a
    name without a step comes last)."""
    paths = {osp.realpath(p) for p in glob.glob(osp.join(glob.escape(work_dir), '*.pth'))
             if _RESUMABLE.match(osp.basename(p))}
    target = _pointer_target(work_dir)
    if target and osp.isfile(target):
        paths.add(osp.realpath(target))

    def age(path: str) -> Tuple[int, float]:
        match = _RESUMABLE.match(osp.basename(path))
        return (int(match.group(1)) if match else -1, osp.getmtime(path))

    return sorted(paths, key=age, reverse=True)


def _training_state_error(checkpoint) -> Optional[str]:
    """Why ``checkpoint`` (a loaded file) cannot be resumed, or None if it can (mmengine's resume reads ``meta``
    (epoch, iter), ``state_dict`` and ``message_hub``)."""
    if not isinstance(checkpoint, dict):
        return f'not a training checkpoint (a {type(checkpoint).__name__}, not a dict)'
    missing = [key for key in ('meta', 'state_dict', 'message_hub') if key not in checkpoint]
    if missing:
        return f'not a training checkpoint (no {", ".join(missing)})'
    return None


def find_resume_checkpoint(work_dir: str, trusted: bool = False) -> Tuple[Optional[str], List[str]]:
    """The newest of :func:`resume_candidates` that loads (``attnzoo.utils.checkpoint.load_checkpoint``; what the
    tools write needs no ``trusted``) and holds a training state, and one message per candidate skipped on the
    way (path and reason). ``(None, skipped)`` if none does."""
    skipped = []
    for path in resume_candidates(work_dir):
        try:
            reason = _training_state_error(load_checkpoint(path, map_location='cpu', trusted=trusted))
        except (CheckpointError, OSError) as e:
            reason = str(e)
        if reason is None:
            return path, skipped
        skipped.append(f'{path}: {reason}')
    return None, skipped


def _ensure_process_group(cfg) -> None:
    """Start the process group of a distributed run now (mmengine's Runner would, with the same arguments), so
    that rank 0's choice can be broadcast before the Runner is built."""
    launcher = cfg.get('launcher', 'none')
    if launcher != 'none' and not is_distributed():
        init_dist(launcher, **dict(cfg.get('env_cfg', {}).get('dist_cfg', {})))


def configure_resume(cfg, resume: Union[None, bool, str], trusted: bool = False) -> None:
    """Set ``cfg.resume`` / ``cfg.load_from`` (an mmengine ``Config`` with ``work_dir`` and ``launcher``) for
    ``tools/train.py --resume``.

    ``resume``: ``True`` (a bare ``--resume``): the newest checkpoint of ``cfg.work_dir`` that loads
    (:func:`find_resume_checkpoint`); a ``ValueError`` if there is none. ``'auto'``: the same, or a fresh run
    (the config's own ``load_from``) if there is none. A path: that file (a ``ValueError`` if it does not exist).
    ``None``: the config decides; its ``resume=True`` without ``load_from`` means ``'auto'``. ``trusted``
    (``--trust-checkpoint``): candidates may need full unpickling.

    Skipped candidates are logged as warnings, naming each. Under DDP rank 0 decides and broadcasts its choice, so
    every rank resumes the same file.
    """
    if resume is None:
        if not cfg.get('resume') or cfg.get('load_from'):
            return
        resume = 'auto'
    if isinstance(resume, str) and resume != 'auto':
        if not osp.isfile(resume):
            raise ValueError(f'--resume {resume!r}: no such file; give a checkpoint path, `auto`, or no value')
        cfg.resume, cfg.load_from = True, resume
        return
    _ensure_process_group(cfg)
    choice: List[Optional[str]] = [None]
    if is_main_process():
        choice[0], skipped = find_resume_checkpoint(cfg.work_dir, trusted)
        for message in skipped:
            print_log(f'--resume skips {message}', logger='current', level=logging.WARNING)
    broadcast_object_list(choice, src=0)
    if choice[0] is not None:
        print_log(f'--resume: resuming from {choice[0]}', logger='current')
        cfg.resume, cfg.load_from = True, choice[0]
    elif resume is True:
        raise ValueError(f'--resume: no checkpoint to resume in work_dir={cfg.work_dir!r} (looked for '
                         f'{POINTER}, epoch_<n>.pth, iter_<n>.pth that load); use `--resume auto` to start from '
                         f'scratch when there is none, or `--resume PATH`')
    else:
        print_log(f'--resume auto: no checkpoint in {cfg.work_dir} loads; training from the start',
                  logger='current', level=logging.WARNING)
        cfg.resume = False
