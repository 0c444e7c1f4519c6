"""Sparsifiner on LV-ViT, phase 2: the official loss (src/losses.py::NewLoss with the SparsifinerLVViT /
LVViTTeacher outputs), the teacher's weights and BatchNorm statistics, and a short training run."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from attnzoo.tasks.classification import TimmOptimWrapperConstructor
from attnzoo.tasks.sparsifiner import logit_distillation, token_distillation

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'classification'
LV_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reduce_n_factor=2, stem_chs=8)


def build(phase, num_classes=5, **kw):
    return MODELS.build(dict(type='SparsifinerClassifier', model_name='sparsifiner_lvvit_small',
                             num_classes=num_classes, phase=phase, model_kwargs=dict(keep_rate=0.25, **LV_TINY),
                             mixup=None, **kw))


def phase1_checkpoint(tmp_path, seed=0):
    """A phase-1 Runner-style checkpoint (``model.`` and ``teacher.`` keys) whose student BatchNorm statistics
    drifted during phase 1 (the student trains in train mode; the teacher stays in eval mode)."""
    torch.manual_seed(seed)
    m1 = build('recon').train()
    with torch.no_grad():
        for _ in range(3):
            m1.model.forward_features(3 * torch.randn(4, 3, 32, 32) + 1)
    path = tmp_path / 'p1.pth'
    torch.save({'state_dict': m1.state_dict()}, path)
    return m1, path


def official_terms(m, x, y, smoothing=0.1):
    """Hand-written official phase-2 terms (src/losses.py NewLoss, default LOSS weights): student
    ``x = head(cls)``, ``features = aux_head(patches)`` (training mode); eval-mode teacher
    ``cls = head(cls)``, ``tokens = aux_head(patches)``."""
    with torch.no_grad():
        t = m.teacher.forward_features(x)
        t_cls, t_tok = m.teacher.head(t[:, 0]), m.teacher.aux_head(t[:, 1:])
        s = m.model.forward_features(x)
        s_cls, s_tok = m.model.head(s[:, 0]), m.model.aux_head(s[:, 1:])
    logp = s_cls.log_softmax(-1)
    ce = ((1 - smoothing) * -logp.gather(1, y[:, None])[:, 0] - smoothing * logp.mean(-1)).mean()
    p_t = t_cls.softmax(-1)
    kl = (p_t * (p_t.log() - logp)).sum() / len(x)
    mse = ((s_tok - t_tok) ** 2).mean()
    return dict(loss_cls=1.0 * ce, loss_cls_distill=0.5 * kl, loss_token_distill=0.5 * mse), (s, t)


def test_phase2_loss_is_the_official_lvvit_loss(tmp_path):
    m1, path = phase1_checkpoint(tmp_path)
    m = build('finetune', init_checkpoint=str(path)).train()
    # the teacher: the dense backbone with the phase-1 teacher's (pretrained) BatchNorm statistics, in eval mode
    bn = 'patch_embed.bn1.running_mean'
    assert not torch.allclose(m1.model.state_dict()[bn], m1.teacher.state_dict()[bn])
    torch.testing.assert_close(m.teacher.state_dict()[bn], m1.teacher.state_dict()[bn])
    torch.testing.assert_close(m.model.state_dict()[bn], m1.model.state_dict()[bn])
    assert m.teacher.training is False and all(not p.requires_grad for p in m.teacher.parameters())
    assert all(b.attn.mask_predictor.budget >= 17 for b in m.teacher.blocks)  # dense

    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    losses = m.loss(x, y)
    assert set(losses) == {'loss_cls', 'loss_cls_distill', 'loss_token_distill'}
    expect, (s, t) = official_terms(m, x, y)
    for k in expect:
        torch.testing.assert_close(losses[k], expect[k], rtol=1e-5, atol=1e-7)
    # what the previous implementation compared differs: eval-mode teacher logits with the 0.5 x max aux term,
    # MSE of the final patch tokens
    with torch.no_grad():
        old_kl = logit_distillation(m.model.head(s[:, 0]), m.teacher.forward_head(t))
    assert (0.5 * old_kl - expect['loss_cls_distill']).abs() > expect['loss_cls_distill'].abs() + 1e-6
    old_mse = token_distillation(s[:, 1:], t[:, 1:])
    assert not torch.allclose(0.5 * old_mse, expect['loss_token_distill'])

    # gradients reach the backbone and both heads, never the predictor or the teacher
    sum(losses.values()).backward()
    assert m.model.aux_head.weight.grad.abs().sum() > 0 and m.model.head.weight.grad.abs().sum() > 0
    assert m.model.patch_embed.conv1.weight.grad is not None
    assert all(p.grad is None for n, p in m.model.named_parameters() if '.mask_predictor.' in n)
    assert all(p.grad is None for p in m.teacher.parameters())


def test_plain_checkpoint_and_other_class_count_keep_the_teacher_equal_to_the_student(tmp_path):
    torch.manual_seed(0)
    src = build('finetune', num_classes=5)
    path = tmp_path / 'plain.pth'
    torch.save(src.model.state_dict(), path)  # no Runner wrapper: teacher = student's weights
    m = build('finetune', num_classes=3, init_checkpoint=str(path), init_replace_head=True)
    for k, v in m.teacher.state_dict().items():
        if not k.startswith(('head.', 'aux_head.')):
            torch.testing.assert_close(v, src.model.state_dict()[k])
    assert m.model.aux_head.weight.shape == (3, 32)  # heads of another size stay as initialised (explicit switch)
    losses = m.loss(torch.randn(2, 3, 32, 32), torch.tensor([0, 2]))
    assert all(torch.isfinite(v) for v in losses.values())


def test_bad_loss_weights_are_named():
    for bad in (dict(cls_distill_weight=-0.5), dict(token_distill_weight=float('nan')),
                dict(recon_weight='0.01'), dict(token_distill_weight=True)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build('finetune', **bad)
    with pytest.raises(ValueError, match='token distillation'):
        token_distillation(torch.zeros(2, 16, 5), torch.zeros(2, 16, 32))


def test_lvvit_phase2_config():
    cfg = Config.fromfile(str(CONFIGS / 'sparsifiner_lvvit_small.py'))
    assert cfg.model.model_name == 'sparsifiner_lvvit_small' and cfg.model.phase == 'finetune'
    assert cfg.model.cls_distill_weight == 0.5 and cfg.model.token_distill_weight == 0.5
    assert cfg.train_cfg.max_epochs == 45 and cfg.optim_wrapper.optimizer.lr == 8e-5
    assert cfg.model.init_checkpoint.endswith('sparsifiner_lvvit_small_phase1/epoch_5.pth')


def test_tiny_phase2_run_lowers_the_loss(tmp_path):
    _, path = phase1_checkpoint(tmp_path)
    m = build('finetune', num_classes=4, init_checkpoint=str(path), init_replace_head=True).train()
    predictor = {n: p.detach().clone() for n, p in m.model.named_parameters() if '.mask_predictor.' in n}
    teacher = {n: p.detach().clone() for n, p in m.teacher.state_dict().items()}
    opt = TimmOptimWrapperConstructor(dict(type='OptimWrapper',
                                           optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05)))(m)
    torch.manual_seed(2)
    data = dict(inputs=torch.randn(8, 3, 32, 32), data_samples=torch.arange(8) % 4)
    totals = []
    for _ in range(25):
        logs = m.train_step(data, opt)  # mmengine's Runner path: loss -> parse_losses -> update
        totals.append(float(torch.as_tensor(logs['loss']).detach()))
    assert all(torch.isfinite(torch.tensor(totals)))
    assert sum(totals[-3:]) / 3 < 0.6 * sum(totals[:3]) / 3, totals
    assert all(float(torch.as_tensor(logs[k]).detach()) > 0 for k in ('loss_token_distill', 'loss_cls_distill'))
    for n, p in m.model.named_parameters():
        if n in predictor:
            torch.testing.assert_close(p, predictor[n])
    for n, v in m.teacher.state_dict().items():
        torch.testing.assert_close(v, teacher[n])
