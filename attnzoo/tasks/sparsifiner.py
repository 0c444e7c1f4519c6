"""Sparsifiner's two-phase training on top of the classification task (official default recipe).

``SparsifinerClassifier`` (mmengine ``MODELS``) is a ``TimmClassifier`` whose ``model`` is a
``sparsifiner_*`` network, plus a frozen dense teacher in eval mode (the same architecture at keep rate
1.0, the official ``VisionTransformerTeacher`` / ``LVViTTeacher`` role) loaded from the same initial weights:

* ``phase='recon'`` (phase 1, official ``attn_recon``, 5 epochs): only ``*.mask_predictor.*`` trains;
  the student runs dense attention and each layer's reconstructed attention is regressed onto the
  teacher's: ``loss = w_recon * mean_layers(sum((approx - teacher_attn[:, :, 1:])**2))`` (w_recon 0.01).
* ``phase='finetune'`` (phase 2, official ``cls_distill``, 45 epochs): the predictor is frozen, the
  attention is sparse; official ``losses.py::NewLoss`` with the default weights (CLS 1.0, CLS_DISTILL 0.5,
  TOKEN_DISTILL 0.5 with criterion MSE; ratio / least-k / budget / L1 / attention self-distillation off):
  ``loss = CE(logits, mixup targets) + 0.5 * KL(teacher || student class distribution, batchmean)
  + 0.5 * MSE(dense outputs, teacher's)``, where the logits and dense outputs depend on the backbone
  (what the official models return as ``x`` / ``features`` in training mode):

  - DeiT (``Sparsifiner``): logits = ``forward_head`` (class token), dense outputs = final patch tokens
    ``[B, N-1, C]``;
  - LV-ViT (``SparsifinerLVViT``): logits = ``head(class token)`` for student and teacher (the official
    ``LVViTTeacher`` returns ``cls = head(norm(x)[:, 0])`` even in eval mode, without the ``0.5 * max``
    aux term of eval-mode predictions), dense outputs = the ``aux_head`` token logits ``[B, N-1, classes]``.

``init_checkpoint`` loads the student (and teacher) from a file: a timm/DeiT/LV-ViT checkpoint (predictor
freshly initialised), an official Sparsifiner state dict, or an mmengine Runner checkpoint of an earlier
phase (``state_dict`` with ``model.`` keys). It is read tensors-only (attnzoo's checkpoint loader) and loaded
strictly; ``init_replace_head=True`` lets a classifier of another size keep its init (fine-tuning to another
class count). A Runner checkpoint's ``teacher.`` keys, when present, load the
teacher: in the official single 50-epoch run the teacher keeps the pretrained weights and BatchNorm
statistics while phase 1 updates the student's (LV-ViT's conv stem has BatchNorm; DeiT has none, so there
both are the same).
"""
from __future__ import annotations

import copy
import math
from typing import Dict, NamedTuple, Optional

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from timm.data.mixup import mixup_target

from ..utils.checkpoint import load_checkpoint, load_state_dict_strict
from .classification import TimmClassifier

__all__ = ['SparsifinerClassifier', 'load_student_checkpoint', 'Phase2Outputs', 'phase2_outputs',
           'class_token_logits', 'logit_distillation', 'token_distillation']

PHASES = ('recon', 'finetune')


def _runner_state(sd: dict, prefix: str) -> Optional[Dict[str, torch.Tensor]]:
    """The ``prefix``-ed entries of an mmengine Runner checkpoint's ``state_dict``, prefix removed, or None
    when ``sd`` is not a Runner checkpoint with such keys."""
    if isinstance(sd, dict) and isinstance(sd.get('state_dict'), dict) \
            and any(k.startswith(prefix) for k in sd['state_dict']):
        return {k[len(prefix):]: v for k, v in sd['state_dict'].items() if k.startswith(prefix)}
    return None


def _load_state(model: torch.nn.Module, sd: dict, path: str, replace_head: bool = False) -> None:
    """Load ``sd`` into a Sparsifiner network through its ``checkpoint_filter_fn``, strictly; with
    ``replace_head`` the classifiers (``head``, LV-ViT's ``aux_head``) may be missing or of another size and then
    keep their init."""
    from attnzoo.models.sparsifiner import checkpoint_filter_fn
    heads = ('head', 'aux_head') if replace_head else ()
    load_state_dict_strict(model, checkpoint_filter_fn(sd, model), f'init_checkpoint={path!r}', heads)


def load_student_checkpoint(model: torch.nn.Module, path: str, replace_head: bool = False) -> None:
    """Load ``path`` (a model state dict, or the ``model.`` keys of a Runner checkpoint) into a Sparsifiner
    network through its ``checkpoint_filter_fn``, strictly (``replace_head``: see ``_load_state``)."""
    sd = load_checkpoint(path)
    _load_state(model, _runner_state(sd, 'model.') or sd, path, replace_head)


def class_token_logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``head(class token)`` of ``forward_features`` output ``[B, 1+P, C]`` -> ``[B, classes]``, in training
    and eval mode alike (for LV-ViT: without the eval-mode ``0.5 * max`` aux-token term)."""
    return model.get_classifier()(model.forward_head(tokens, pre_logits=True))


def logit_distillation(logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """Official ``cls_distill`` term: ``KL(softmax(t_logits) || softmax(logits))`` summed over classes and
    averaged over the batch (``F.kl_div(log_softmax(s), log_softmax(t), 'batchmean', log_target=True)``).
    ``logits``, ``t_logits``: ``[B, classes]`` -> scalar (fp32)."""
    return F.kl_div(F.log_softmax(logits.float(), -1), F.log_softmax(t_logits.float(), -1),
                    reduction='batchmean', log_target=True)


def token_distillation(dense: torch.Tensor, t_dense: torch.Tensor) -> torch.Tensor:
    """Official token-distillation term (criterion ``MSE``): the squared error averaged over every element.
    ``dense``, ``t_dense``: ``[B, P, D]`` (patch tokens, or LV-ViT aux-head logits with D = classes) ->
    scalar (fp32)."""
    if dense.shape != t_dense.shape:
        raise ValueError(f'token distillation: student {list(dense.shape)} vs teacher {list(t_dense.shape)}')
    return F.mse_loss(dense.float(), t_dense.float())


class Phase2Outputs(NamedTuple):
    """What the phase-2 loss compares. ``logits`` / ``t_logits``: ``[B, classes]`` (student / teacher);
    ``dense`` / ``t_dense``: ``[B, P, D]`` per-patch outputs (the official ``features``)."""
    logits: torch.Tensor
    t_logits: torch.Tensor
    dense: torch.Tensor
    t_dense: torch.Tensor


def phase2_outputs(model: torch.nn.Module, teacher: torch.nn.Module, inputs: torch.Tensor) -> Phase2Outputs:
    """Run the (eval-mode, frozen) teacher without gradients, then the student, on ``inputs`` ``[B, 3, H, W]``.

    DeiT: logits from ``forward_head``, dense outputs the final patch tokens ``[B, P, C]``. LV-ViT
    (``SparsifinerLVViT``): ``head(class token)`` logits for both networks and the ``aux_head`` token logits
    ``[B, P, classes]`` (official ``SparsifinerLVViT`` training outputs ``x`` / ``features`` and
    ``LVViTTeacher``'s ``cls`` / ``tokens``)."""
    from attnzoo.models.sparsifiner import SparsifinerLVViT
    npt = model.num_prefix_tokens
    if isinstance(model, SparsifinerLVViT):
        with torch.no_grad():
            t_tokens = teacher.forward_features(inputs)
            t_logits, t_dense = class_token_logits(teacher, t_tokens), teacher.aux_logits(t_tokens)
        tokens = model.forward_features(inputs)
        return Phase2Outputs(class_token_logits(model, tokens), t_logits, model.aux_logits(tokens), t_dense)
    with torch.no_grad():
        t_tokens = teacher.forward_features(inputs)
        t_logits = teacher.forward_head(t_tokens)
    tokens = model.forward_features(inputs)
    return Phase2Outputs(model.forward_head(tokens), t_logits, tokens[:, npt:], t_tokens[:, npt:])


def _check_weight(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
    return float(value)


@MODELS.register_module()
class SparsifinerClassifier(TimmClassifier):
    """Two-phase Sparsifiner training (see the module docstring).

    Args:
        phase: ``'recon'`` (phase 1) or ``'finetune'`` (phase 2).
        init_checkpoint: file the student and teacher start from (None: the model's own init, e.g.
            ``model_kwargs=dict(pretrained=True)`` for the DeiT / LV-ViT weights), loaded strictly.
        init_replace_head: let the classifier of ``init_checkpoint`` be missing or of another size (it then
            keeps its init): fine-tuning to another class count. False: every key must fit.
        recon_weight: weight of the attention distillation loss (official ``ATTN_RECON.WEIGHT`` 0.01).
        cls_distill_weight / token_distill_weight: phase-2 KL and token MSE weights (official
            ``CLS_DISTILL.WEIGHT`` / ``TOKEN_DISTILL.WEIGHT``: 0.5 / 0.5).
        Other arguments: as ``TimmClassifier``.
    """

    def __init__(self, model_name: str, phase: str = 'recon', init_checkpoint: Optional[str] = None,
                 init_replace_head: bool = False, recon_weight: float = 0.01, cls_distill_weight: float = 0.5,
                 token_distill_weight: float = 0.5,
                 **kwargs):
        if phase not in PHASES:
            raise ValueError(f'phase must be one of {PHASES}, got {phase!r}')
        if not isinstance(init_replace_head, bool):
            raise TypeError(f'init_replace_head must be a bool, got {init_replace_head!r}')
        weights = dict(recon_weight=recon_weight, cls_distill_weight=cls_distill_weight,
                       token_distill_weight=token_distill_weight)
        weights = {k: _check_weight(k, v) for k, v in weights.items()}
        super().__init__(model_name, **kwargs)
        from attnzoo.models.sparsifiner import Sparsifiner
        if not isinstance(self.model, Sparsifiner):
            raise ValueError(f'model_name={model_name!r} is not a Sparsifiner model '
                             '(sparsifiner_deit_* / sparsifiner_lvvit_*)')
        teacher_state = None
        if init_checkpoint:
            sd = load_checkpoint(init_checkpoint)
            _load_state(self.model, _runner_state(sd, 'model.') or sd, init_checkpoint, init_replace_head)
            teacher_state = _runner_state(sd, 'teacher.')
        self.phase = phase
        self.recon_weight = weights['recon_weight']
        self.cls_distill_weight = weights['cls_distill_weight']
        self.token_distill_weight = weights['token_distill_weight']
        # the teacher: the same dense backbone, frozen (predictor unused at keep rate 1.0)
        self.teacher = copy.deepcopy(self.model)
        if teacher_state is not None:
            _load_state(self.teacher, teacher_state, init_checkpoint, init_replace_head)
        self.teacher.set_keep_rate(1.0)
        self.teacher.set_record_attn(phase == 'recon')
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        for name, p in self.model.named_parameters():
            p.requires_grad_((('.mask_predictor.' in name) == (phase == 'recon')))
        self.model.set_recon_mode(phase == 'recon')

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def _recon_loss(self, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Phase 1: ``inputs`` ``[B, 3, H, W]`` -> ``{'loss_attn_recon': scalar}``."""
        with torch.no_grad():
            self.teacher.forward_features(inputs)
        self.model.forward_features(inputs)
        t_maps = self.teacher.attn_maps()
        losses = [F.mse_loss(a.float(), t[:, :, 1:].float(), reduction='sum')
                  for a, t in zip(self.model.approx_attn_maps(), t_maps)]
        self.model.set_recon_mode(True)  # drop the kept maps
        self.teacher.set_record_attn(True)
        return dict(loss_attn_recon=self.recon_weight * torch.stack(losses).mean())

    def loss(self, inputs: torch.Tensor, data_samples: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = data_samples
        if self.mixup_fn is not None:
            if len(inputs) % 2 == 0:
                inputs, target = self.mixup_fn(inputs, target)
            else:
                target = mixup_target(target, self.num_classes, smoothing=self.smoothing)
        if self.phase == 'recon':
            return self._recon_loss(inputs)
        out = phase2_outputs(self.model, self.teacher, inputs)
        return dict(
            loss_cls=self.train_loss(out.logits.float(), target),
            loss_cls_distill=self.cls_distill_weight * logit_distillation(out.logits, out.t_logits),
            loss_token_distill=self.token_distill_weight * token_distillation(out.dense, out.t_dense),
        )
