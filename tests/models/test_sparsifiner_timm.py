"""Sparsifiner under timm's own model tests.

* Like timm's ViT / DeiT it returns tokens ``[B, 1+N, C]`` from ``forward_features`` (``pool_size`` None), so timm
  checks it with ``test_model_default_cfgs_non_std`` (its ``NON_STD_FILTERS`` hold ``vit_*`` / ``deit_*``): those
  checks, on every tag.
* Outside phase 1 the predictors are frozen: their connectivity is detached, so they could get no gradient. Every
  trainable parameter gets one (plain training, after ``prune_intermediate_layers``, and in phase 1 with every
  parameter trainable), and timm's optimizer factory leaves the frozen ones out.
"""
import pytest
import timm
from timm.optim import create_optimizer_v2
import torch

import attnzoo  # noqa: F401

TAGGED = timm.list_models('sparsifiner_*', include_tags=True)
SMALL = dict(depth=3, embed_dim=48, num_heads=3)


def _slow_if_large(name):
    large = name.split('.')[0] in ('sparsifiner_deit_small', 'sparsifiner_deit_base')
    return pytest.param(name, marks=pytest.mark.slow) if large else name


@pytest.mark.parametrize('name', [_slow_if_large(n) for n in TAGGED])
def test_default_cfgs_non_std_contract(name):
    """timm 1.0.31's test_model_default_cfgs_non_std, for a 3-D token output (feature dim -1)."""
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert cfg['pool_size'] is None and cfg == timm.create_model(name.split('.')[0]).pretrained_cfg
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        tokens = model.forward_features(x)
        pre = model.forward_head(tokens, pre_logits=True)
        assert tokens.ndim == 3 and tokens.shape[-1] == model.num_features
        assert pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0
        pooled = model(x)
        assert pooled.shape[-1] == model.head_hidden_size and pooled.shape == pre.shape
        headless = timm.create_model(name, num_classes=0).eval()
        assert headless(x).shape[-1] == headless.num_features
    state = timm.create_model(name).state_dict()
    classifier = cfg['classifier'] if isinstance(cfg['classifier'], (tuple, list)) else (cfg['classifier'],)
    assert all(f'{c}.weight' in state for c in classifier) and f'{cfg["first_conv"]}.weight' in state


def _backward(model, recon=False):
    """A training step's backward: the logits, LV-ViT's token-labeling logits, and in phase 1 the approximate
    attention maps."""
    model.train()
    tokens = model.forward_features(torch.randn(2, 3, 224, 224))
    loss = model.forward_head(tokens).mean()
    if hasattr(model, 'aux_logits'):
        loss = loss + model.aux_logits(tokens).mean()
    if recon:
        loss = loss + sum(a.mean() for a in model.approx_attn_maps())
    loss.backward()


@pytest.mark.parametrize('name', ['sparsifiner_deit_tiny', 'sparsifiner_lvvit_small'])
def test_predictor_is_frozen_outside_phase_1_and_every_trainable_parameter_learns(name):
    model = timm.create_model(name, **SMALL)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all('.attn.mask_predictor.' in n for n in frozen)
    assert frozen == {n for n, _ in model.named_parameters() if '.attn.mask_predictor.' in n}
    optimizer = create_optimizer_v2(model, 'adamw', lr=1e-3)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group['params']}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    _backward(model)
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)

    model.set_recon_mode(True)  # phase 1: the predictors train (against the approximate attention)
    assert all(p.requires_grad for p in model.parameters())
    model.zero_grad(set_to_none=True)
    _backward(model, recon=True)
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    model.set_recon_mode(False)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen


def test_pruned_model_keeps_its_predictors_in_the_same_state():
    model = timm.create_model('sparsifiner_deit_tiny', **SMALL)
    assert model.prune_intermediate_layers([1], prune_head=False) == [1] and len(model.blocks) == 2
    assert all(not p.requires_grad for blk in model.blocks for p in blk.attn.mask_predictor.parameters())
    _backward(model)
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.set_recon_mode(True)
    model.zero_grad(set_to_none=True)
    _backward(model, recon=True)
    assert not [n for n, p in model.named_parameters() if p.grad is None]
