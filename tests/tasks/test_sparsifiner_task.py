"""Sparsifiner two-phase task: phase semantics (fast) and the digits demo end to end (slow)."""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from attnzoo.tasks.classification import TimmOptimWrapperConstructor

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'classification'
ARCH = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reduce_n_factor=2)


def build(phase, **kw):
    return MODELS.build(dict(type='SparsifinerClassifier', model_name='sparsifiner_deit_tiny', num_classes=4,
                             phase=phase, model_kwargs=dict(keep_rate=0.25, **ARCH), mixup=None, **kw))


def test_phase1_trains_only_the_predictor_against_the_teacher_attention():
    m = build('recon').train()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all('.mask_predictor.' in n and n.startswith('model.') for n in trainable)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        m.model.head.weight.add_(torch.randn_like(m.model.head.weight))  # student logits away from the teacher's
    losses = m.loss(x, y)
    assert set(losses) == {'loss_attn_recon'}
    # the loss is 0.01 x mean over layers of the summed squared error against the teacher's maps
    m.model.forward_features(x)
    m.teacher.forward_features(x)
    expect = 0.01 * torch.stack([((a - t[:, :, 1:]) ** 2).sum() for a, t in
                                 zip(m.model.approx_attn_maps(), m.teacher.attn_maps())]).mean()
    torch.testing.assert_close(losses['loss_attn_recon'], expect)
    losses['loss_attn_recon'].backward()
    opt = TimmOptimWrapperConstructor(dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)))(m)
    n_opt = sum(p.numel() for g in opt.optimizer.param_groups for p in g['params'])
    assert n_opt == sum(p.numel() for n, p in m.named_parameters() if n in trainable)
    assert m.teacher.training is False


def test_phase2_freezes_the_predictor_and_uses_the_paper_loss(tmp_path):
    m1 = build('recon')
    path = tmp_path / 'p1.pth'
    torch.save({'state_dict': {f'model.{k}': v for k, v in m1.model.state_dict().items()}}, path)
    m = build('finetune', init_checkpoint=str(path)).train()
    for n, p in m.model.named_parameters():
        assert p.requires_grad == ('.mask_predictor.' not in n)
        torch.testing.assert_close(p, m1.model.state_dict()[n])
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        m.model.head.weight.add_(torch.randn_like(m.model.head.weight))  # student logits away from the teacher's
    losses = m.loss(x, y)
    assert set(losses) == {'loss_cls', 'loss_cls_distill', 'loss_token_distill'}
    # DeiT (official Sparsifiner / VisionTransformerTeacher): CE + 0.5 KL(teacher logits) + 0.5 MSE(patch tokens)
    with torch.no_grad():
        t, s = m.teacher.forward_features(x), m.model.forward_features(x)
        logp, logp_t = m.model.forward_head(s).log_softmax(-1), m.teacher.forward_head(t).log_softmax(-1)
    expect = dict(
        loss_cls=(0.9 * -logp.gather(1, y[:, None])[:, 0] - 0.1 * logp.mean(-1)).mean(),
        loss_cls_distill=0.5 * (logp_t.exp() * (logp_t - logp)).sum() / 4,
        loss_token_distill=0.5 * ((s[:, 1:] - t[:, 1:]) ** 2).mean())
    for k in expect:
        torch.testing.assert_close(losses[k], expect[k], rtol=1e-5, atol=1e-8)
    assert losses['loss_cls_distill'] > 1e-3
    # the student starts as the teacher's backbone, sparse: distillation terms are small but non-zero
    assert losses['loss_token_distill'] > 0
    assert m.model.blocks[0].attn.mask_predictor.budget == 5  # ceil(0.25 * 17)
    with pytest.raises(ValueError, match='phase'):
        build('joint')


def test_configs_build_and_chain():
    names = ['sparsifiner_deit_small_phase1', 'sparsifiner_deit_small_phase2']
    p1, p2 = (Config.fromfile(str(CONFIGS / f'{n}.py')) for n in names)
    assert p1.model.phase == 'recon' and p2.model.phase == 'finetune'
    assert p1.train_cfg.max_epochs == 5 and p2.train_cfg.max_epochs == 45
    assert p1.optim_wrapper.optimizer.lr == 3e-4 and p2.optim_wrapper.optimizer.lr == 8e-5
    assert p1.model.model_kwargs.keep_rate == 0.25
    for n in ('sparsifiner_digits_dense', 'sparsifiner_digits_phase1', 'sparsifiner_digits_phase2'):
        cfg = Config.fromfile(str(CONFIGS / f'{n}.py'))
        model = MODELS.build(dict(cfg.model, init_checkpoint=None) if 'phase' in n else cfg.model)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_digits_two_phase_demo_end_to_end(tmp_path):
    """Dense backbone, phase 1, phase 2 on the digits demo: losses fall in both phases and the sparse model
    (keep 0.25) ends within a few points of the dense one (measured: dense 93.3, phase 2 93.9)."""
    import sys
    sys.path.insert(0, str(REPO / 'tools'))
    import train as train_tool

    def run(name, work, **opts):
        args = [str(CONFIGS / f'{name}.py'), '--work-dir', str(work)]
        if opts:
            args += ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
        train_tool.main(args)
        log = next(work.glob('*/*.log')).read_text()
        losses = [float(x) for x in re.findall(r'Epoch\(train\).*? loss: ([0-9.]+)', log)]
        top1 = [float(x) for x in re.findall(r'Epoch\(val\).*?top1: ([0-9.]+)', log)]
        return losses, top1

    data = dict(**{'train_dataloader.dataset.data_root': str(tmp_path / 'digits'),
                   'val_dataloader.dataset.data_root': str(tmp_path / 'digits')})
    _, dense = run('sparsifiner_digits_dense', tmp_path / 'dense', **data)
    l1, _ = run('sparsifiner_digits_phase1', tmp_path / 'p1', **data,
                **{'model.init_checkpoint': str(tmp_path / 'dense' / 'epoch_12.pth')})
    l2, sparse = run('sparsifiner_digits_phase2', tmp_path / 'p2', **data,
                     **{'model.init_checkpoint': str(tmp_path / 'p1' / 'epoch_3.pth')})
    assert l1[-1] < 0.75 * l1[0]
    assert sum(l2[-3:]) / 3 < sum(l2[:3]) / 3
    assert dense[-1] > 85 and sparse[-1] > dense[-1] - 4


@pytest.mark.parametrize('phase', ['recon', 'finetune'])
def test_training_loss_leaves_unreadable_images_out(phase):
    from attnzoo.tasks.classification import BAD_IMAGE_LABEL
    m = build(phase).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, BAD_IMAGE_LABEL, 2, 3])
    losses = m(x, y, mode='loss')
    expect = m.loss(x[[0, 2, 3]], y[[0, 2, 3]])
    assert set(losses) == set(expect)
    for k in expect:
        torch.testing.assert_close(losses[k], expect[k])


def test_init_checkpoint_is_strict_and_tensors_only(tmp_path):
    """A classifier of another size is an error unless init_replace_head=True; a file that needs full
    unpickling is refused (it used to be unpickled fully)."""
    import os
    from attnzoo.utils.checkpoint import CheckpointError
    source = build('recon')
    wide = tmp_path / 'ten_classes.pth'
    torch.save({'state_dict': {f'model.{k}': (torch.zeros(10, *v.shape[1:]) if k.startswith('head.') else v)
                               for k, v in source.model.state_dict().items()}}, wide)
    with pytest.raises(CheckpointError, match=r'(?s)does not fit.*head\.weight: \(10, 32\) in the file, \(4, 32\)'):
        build('finetune', init_checkpoint=str(wide))
    m = build('finetune', init_checkpoint=str(wide), init_replace_head=True)
    assert torch.equal(m.model.blocks[0].attn.qkv.weight, source.model.blocks[0].attn.qkv.weight)
    assert m.model.head.weight.shape == (4, 32) and m.model.head.weight.abs().sum() > 0  # kept its init
    code = tmp_path / 'code.pth'
    torch.save({'model': source.model.state_dict(), 'hook': os.getpid}, code)
    with pytest.raises(CheckpointError, match='needs full unpickling.*--trust-checkpoint'):
        build('finetune', init_checkpoint=str(code))
