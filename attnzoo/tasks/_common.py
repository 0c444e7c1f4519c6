"""Glue shared by the task modules: the input normalisation of a timm model, the list
collate of variable-size batches, and the ``Final: ...`` summary hooks (whose state lives in the checkpoints, so it
survives a resume). The demo datasets are in :mod:`.demo_data`; the check of a timm model name (with its close
matches) is :func:`attnzoo.models.dense.check_model_name`, which the dense backbone below the tasks uses too."""
import numbers
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import timm
from mmengine.hooks import Hook
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ['model_mean_std', 'list_collate', 'find_metric', 'final_line', 'scalar_metrics',
           'SummaryHook']


# --------------------------------------------------------------------------------------------
# normalisation and batches
# --------------------------------------------------------------------------------------------
def model_mean_std(model_name: str, image_mean: Optional[Sequence[float]] = None,
                   image_std: Optional[Sequence[float]] = None) -> Tuple[List[float], List[float]]:
    """The input normalisation (0-1 scale): ``image_mean`` / ``image_std`` where given, else those of the timm
    ``pretrained_cfg`` of ``model_name``'s default tag, else ImageNet's."""
    cfg = timm.models.get_pretrained_cfg(model_name.split('.')[0])
    cfg = cfg.to_dict() if cfg is not None else {}
    return (list(image_mean or cfg.get('mean', IMAGENET_DEFAULT_MEAN)),
            list(image_std or cfg.get('std', IMAGENET_DEFAULT_STD)))


def list_collate(batch: Sequence[dict]) -> dict:
    """``[dict(inputs, data_samples)] -> dict(inputs=[...], data_samples=[...])``: no stacking, for images of
    different sizes and per-image target dicts (torchvision's detectors, sliding-window segmentation)."""
    return dict(inputs=[b['inputs'] for b in batch], data_samples=[b['data_samples'] for b in batch])


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------
def find_metric(metrics: dict, key: str) -> Optional[float]:
    """The value of ``key`` in an evaluator's metric dict, also under a prefix (``'accuracy/top1'``); None if
    absent."""
    return next((v for k, v in metrics.items() if k == key or k.endswith('/' + key)), None)


def final_line(parts: Iterable[str], seconds: float, **extra) -> str:
    """``Final: <parts> <extra k=v ...> time=..s``."""
    return 'Final: ' + ' '.join([*parts, *(f'{k}={v}' for k, v in extra.items()), f'time={seconds:.1f}s'])


def scalar_metrics(metrics: dict) -> Dict[str, float]:
    """The real-number entries of an evaluator's metric dict, as Python floats (what a summary line reports, and
    what a checkpoint can hold without full unpickling)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}


class SummaryHook(Hook):
    """Logs one ``Final: ...`` line at the end of training (last validation metrics, the best value of one metric,
    the runner's counters, training time) and of testing (test metrics, test-set size, wall time); the line is also
    kept in ``summary``.

    The training state of the line (best value, last metrics, training seconds) is saved with every checkpoint,
    in its message hub under ``state_key``, which mmengine restores on a resume only (not for ``load_from``): after
    a resume the best value covers the validations before the checkpoint too, and ``time`` adds the training time
    up to the checkpoint to the resumed run's. The hook sees the validation metrics before the checkpoint hook
    (priority ``LOW``), so a checkpoint re-saved for a new best holds that best.

    Subclasses implement :meth:`format` and :meth:`best_candidate` and set ``best_name`` / ``best_fmt`` (how the
    best value is reported), ``counters`` (runner attributes reported after training, by name) and ``count_name``
    (what the test-set size is called).
    """
    priority = 'LOW'  # after the logger (so the line comes last), before CheckpointHook (VERY_LOW)
    state_key = 'summary_hook'
    best_name = 'best'
    best_fmt = '.4f'
    counters: Dict[str, str] = {'epochs': 'epoch', 'iters': 'iter'}
    count_name = 'samples'

    def __init__(self):
        self._t: Optional[float] = None
        self._seconds_before = 0.0  # training time of the runs before a resume, up to the checkpoint resumed
        self.last_metrics: Optional[Dict[str, float]] = None
        self.best: Optional[float] = None
        self.summary: Optional[str] = None

    def format(self, metrics: Optional[dict], seconds: float, **extra) -> str:
        """The summary line of ``metrics`` (None: no validation ran)."""
        raise NotImplementedError

    def best_candidate(self, metrics: dict) -> Optional[float]:
        """The value of the tracked metric in one validation's ``metrics`` (None if absent)."""
        raise NotImplementedError

    def _elapsed(self) -> float:
        return time.time() - (self._t or time.time())

    def state_dict(self) -> dict:
        """The training state of the summary: ``best``, ``last_metrics``, ``train_seconds`` (so far)."""
        return dict(best=self.best, last_metrics=self.last_metrics,
                    train_seconds=self._seconds_before + self._elapsed())

    def before_train(self, runner) -> None:
        state = runner.message_hub.get_info(self.state_key) or {}  # restored by a resume, else empty
        self.best = state.get('best')
        self.last_metrics = state.get('last_metrics')
        self._seconds_before = state.get('train_seconds', 0.0)
        self._t = time.time()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Put :meth:`state_dict` into the checkpoint's message hub (mmengine's ``MessageHub.state_dict`` layout)."""
        hub = checkpoint['message_hub']
        hub['runtime_info'][self.state_key] = self.state_dict()
        hub['resumed_keys'][self.state_key] = True

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if metrics:
            self.last_metrics = scalar_metrics(metrics)
            value = self.best_candidate(metrics)
            if value is not None and (self.best is None or value > self.best):
                self.best = float(value)

    def after_train(self, runner) -> None:
        extra = {name: getattr(runner, attr) for name, attr in self.counters.items()}
        if self.best is not None:
            extra[self.best_name] = f'{self.best:{self.best_fmt}}'
        self.summary = self.format(self.last_metrics, self._seconds_before + self._elapsed(), **extra)
        runner.logger.info(self.summary)

    def before_test(self, runner) -> None:
        self._t = time.time()

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self.summary = self.format(metrics, self._elapsed(), **{self.count_name: len(runner.test_dataloader.dataset)})
        runner.logger.info(self.summary)
