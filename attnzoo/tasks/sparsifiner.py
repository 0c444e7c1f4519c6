"""Sparsifiner's two-phase training on top of the classification task (official default recipe).

``SparsifinerClassifier`` (mmengine ``MODELS``) is a ``TimmClassifier`` whose ``model`` is a
``sparsifiner_*`` network, plus a frozen dense teacher (the same architecture at keep rate 1.0, the
official ``VisionTransformerTeacher`` role) loaded from the same initial weights:

* ``phase='recon'`` (phase 1, official ``attn_recon``, 5 epochs): only ``*.mask_predictor.*`` trains;
  the student runs dense attention and each layer's reconstructed attention is regressed onto the
  teacher's: ``loss = w_recon * mean_layers(sum((approx - teacher_attn[:, :, 1:])**2))`` (w_recon 0.01).
* ``phase='finetune'`` (phase 2, official ``cls_distill``, 45 epochs): the predictor is frozen, the
  attention is sparse; ``loss = CE(mixup targets) + 0.5 * KL(student || teacher logits, batchmean)
  + 0.5 * MSE(final patch tokens, teacher's)``.

``init_checkpoint`` loads the student (and teacher) from a file: a timm/DeiT checkpoint (predictor
freshly initialised), an official Sparsifiner state dict, or an mmengine Runner checkpoint of an
earlier phase (``state_dict`` with ``model.`` keys; ``teacher.`` keys are ignored).
"""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from timm.data.mixup import mixup_target

from .classification import TimmClassifier

__all__ = ['SparsifinerClassifier', 'load_student_checkpoint']

PHASES = ('recon', 'finetune')


def load_student_checkpoint(model: torch.nn.Module, path: str) -> None:
    """Load ``path`` into a Sparsifiner network through its ``checkpoint_filter_fn`` (strict, except a
    classifier of another size, which is left as initialised)."""
    from attnzoo.models.sparsifiner import checkpoint_filter_fn
    sd = torch.load(path, map_location='cpu', weights_only=False)
    if isinstance(sd, dict) and 'state_dict' in sd and any(k.startswith('model.') for k in sd['state_dict']):
        sd = {k[len('model.'):]: v for k, v in sd['state_dict'].items() if k.startswith('model.')}
    sd = checkpoint_filter_fn(sd, model)
    own = model.state_dict()
    for key in [k for k in sd if k.startswith('head.') and (k not in own or sd[k].shape != own[k].shape)]:
        sd.pop(key)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if not k.startswith('head.')]:
        raise ValueError(f'init_checkpoint={path!r}: missing {missing}, unexpected {unexpected}')


@MODELS.register_module()
class SparsifinerClassifier(TimmClassifier):
    """Two-phase Sparsifiner training (see the module docstring).

    Args:
        phase: ``'recon'`` (phase 1) or ``'finetune'`` (phase 2).
        init_checkpoint: file the student and teacher start from (None: the model's own init, e.g.
            ``model_kwargs=dict(pretrained=True)`` for the DeiT weights).
        recon_weight: weight of the attention distillation loss (0.01).
        cls_distill_weight / token_distill_weight: phase-2 KL and token MSE weights (0.5 / 0.5).
        Other arguments: as ``TimmClassifier``.
    """

    def __init__(self, model_name: str, phase: str = 'recon', init_checkpoint: Optional[str] = None,
                 recon_weight: float = 0.01, cls_distill_weight: float = 0.5, token_distill_weight: float = 0.5,
                 **kwargs):
        if phase not in PHASES:
            raise ValueError(f'phase must be one of {PHASES}, got {phase!r}')
        super().__init__(model_name, **kwargs)
        from attnzoo.models.sparsifiner import Sparsifiner
        if not isinstance(self.model, Sparsifiner):
            raise ValueError(f'model_name={model_name!r} is not a Sparsifiner model (sparsifiner_deit_*)')
        if init_checkpoint:
            load_student_checkpoint(self.model, init_checkpoint)
        self.phase = phase
        self.recon_weight = recon_weight
        self.cls_distill_weight = cls_distill_weight
        self.token_distill_weight = token_distill_weight
        # the teacher: the same dense backbone, frozen (predictor unused at keep rate 1.0)
        self.teacher = copy.deepcopy(self.model)
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

    def loss(self, inputs: torch.Tensor, data_samples: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = data_samples
        if self.mixup_fn is not None:
            if len(inputs) % 2 == 0:
                inputs, target = self.mixup_fn(inputs, target)
            else:
                target = mixup_target(target, self.num_classes, smoothing=self.smoothing)
        with torch.no_grad():
            t_tokens = self.teacher.forward_features(inputs)
        if self.phase == 'recon':
            self.model.forward_features(inputs)
            t_maps = self.teacher.attn_maps()
            losses = [F.mse_loss(a.float(), t[:, :, 1:].float(), reduction='sum')
                      for a, t in zip(self.model.approx_attn_maps(), t_maps)]
            self.model.set_recon_mode(True)  # drop the kept maps
            self.teacher.set_record_attn(True)
            return dict(loss_attn_recon=self.recon_weight * torch.stack(losses).mean())
        tokens = self.model.forward_features(inputs)
        logits = self.model.forward_head(tokens)
        t_logits = self.teacher.forward_head(t_tokens)
        npt = self.model.num_prefix_tokens
        return dict(
            loss_cls=self.train_loss(logits.float(), target),
            loss_cls_distill=self.cls_distill_weight * F.kl_div(
                F.log_softmax(logits.float(), -1), F.log_softmax(t_logits.float(), -1),
                reduction='batchmean', log_target=True),
            loss_token_distill=self.token_distill_weight * F.mse_loss(
                tokens[:, npt:].float(), t_tokens[:, npt:].float()),
        )
