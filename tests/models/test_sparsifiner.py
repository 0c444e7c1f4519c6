"""Sparsifiner: parity with the official fixture, params / attention MACs, timm contract, checkpoints, modes."""
import pytest
import timm
import torch

import attnzoo  # noqa: F401
from attnzoo.models.sparsifiner import Sparsifiner, checkpoint_filter_fn, predictor_macs
from attnzoo.ops import count_attention_macs, use_backend
from attnzoo.utils import count_params

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reduce_n_factor=2)  # 17 tokens


def fixture_model(parity_dir):
    d = torch.load(parity_dir / 'sparsifiner_reduced.pt', weights_only=False)
    kw = d['official_kwargs']
    m = Sparsifiner(embed_dim=kw['embed_dim'], depth=kw['depth'], num_heads=kw['num_heads'], mlp_ratio=kw['mlp_ratio'],
                    qkv_bias=kw['qkv_bias'], keep_rate=kw['attn_keep_rate_list'][0],
                    reduce_n_factor=kw['reduce_n_factor'], reduce_c_factor=kw['reduce_c_factor'])
    m.load_state_dict(checkpoint_filter_fn(d['state_dict'], m), strict=True)
    return m.eval(), d


@pytest.mark.parametrize('dtype,backend', [(torch.float64, 'torch'), (torch.float64, 'reference'),
                                           (torch.float32, 'torch')])
def test_parity_with_official_fixture(parity_dir, dtype, backend):
    m, d = fixture_model(parity_dir)
    m = m.to(dtype)
    atol = d['atol_suggested'] if dtype == torch.float64 else d['atol_suggested_float32']
    with torch.no_grad(), use_backend(backend):
        for x, y, feats in zip(d['inputs'], d['outputs'], d['features']):
            tokens = m.forward_features(x.to(dtype))
            out = m.forward_head(tokens)
            assert (out.float() - y).abs().max() <= atol
            assert (tokens[:, 1:].float() - feats[0]).abs().max() <= atol


# paper / official code (../shared/papers/biformer_sparsifiner.md 2.1): DeiT-S 22.051 M, Sparsifiner-S 22.252 M
@pytest.mark.parametrize('name,deit,params', [('sparsifiner_deit_tiny', 'deit_tiny_patch16_224', None),
                                              ('sparsifiner_deit_small', 'deit_small_patch16_224', 22.252e6),
                                              ('sparsifiner_deit_base', 'deit_base_patch16_224', None)])
def test_params_are_deit_plus_predictor(name, deit, params):
    m = timm.create_model(name, device='meta')
    base = count_params(timm.create_model(deit, device='meta'))
    per_block = 2 * 197 * 32 + 2 * (64 * 32 + 32)  # 16,768: head_dim 64 in every DeiT
    assert count_params(m) == base + 12 * per_block
    if params:
        assert count_params(m) == pytest.approx(params, abs=1e3)


def test_attention_macs_fall_with_keep_rate_as_in_the_paper():
    m = timm.create_model('sparsifiner_deit_small').eval()
    x = torch.zeros(1, 3, 224, 224)
    macs = {}
    for rate in (1.0, 0.5, 0.25):
        m.set_keep_rate(rate)
        with torch.no_grad(), count_attention_macs() as c:
            m(x)
        macs[rate] = c.macs
    assert macs[1.0] == 12 * 2 * 197 ** 2 * 384  # 357.7 M, the paper's DeiT-S "MHSA" column
    assert macs[0.25] == 12 * 6 * (197 + 196 * 50) * 128  # 92.1 M (class row dense)
    assert macs[0.5] == 12 * 6 * (197 + 196 * 99) * 128
    # with the predictor: paper 0.5 -> 254.2 M; ours counts 180.6 + 109.4 (the paper's tool is not released)
    assert predictor_macs(m) == 12 * 6 * (2 * 197 * 64 * 32 + 32 * 197 * 32 + 196 * 32 * 32 + 196 * 8 * 197)


def test_timm_contract():
    m = timm.create_model('sparsifiner_deit_tiny', **TINY, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 5)
    final, inter = m.forward_intermediates(x)
    assert len(inter) == 2 and inter[0].shape == (2, 32, 4, 4)
    f = timm.create_model('sparsifiner_deit_tiny', **TINY, features_only=True, out_indices=(0, 1))
    assert [t.shape for t in f(x)] == [(2, 32, 4, 4)] * 2
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)
    assert 'pos_embed' in m.no_weight_decay()
    assert m.group_matcher()['blocks']
    with pytest.raises(ValueError, match='sized for 17 tokens'):
        m(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match='keep_rate'):
        timm.create_model('sparsifiner_deit_tiny', **TINY, keep_rate=0.0)
    with pytest.raises(ValueError, match='dynamic_img_size'):
        timm.create_model('sparsifiner_deit_tiny', **TINY, dynamic_img_size=True)


def test_keep_rate_one_is_dense_deit_and_sparse_differs():
    m = timm.create_model('sparsifiner_deit_tiny', **TINY, keep_rate=1.0).eval()
    deit = timm.create_model('deit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=32, depth=2,
                             num_heads=2).eval()
    deit.load_state_dict({k: v for k, v in m.state_dict().items() if 'mask_predictor' not in k})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), deit(x), atol=1e-5, rtol=1e-5)
        m.set_keep_rate(0.25)
        assert (m(x) - deit(x)).abs().max() > 1e-4


def test_loads_plain_deit_weights_with_fresh_predictor(tmp_path):
    deit = timm.create_model('deit_tiny_patch16_224', img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    path = tmp_path / 'deit.pth'
    torch.save({'model': deit.state_dict()}, path)
    m = timm.create_model('sparsifiner_deit_tiny', **TINY, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in deit.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v)
    bad = dict(deit.state_dict(), dist_token=torch.zeros(1, 1, 32))
    with pytest.raises(ValueError, match='dist_token'):
        checkpoint_filter_fn(bad, m)


def test_recon_mode_keeps_differentiable_approx_attention_and_dense_output():
    m = timm.create_model('sparsifiner_deit_tiny', **TINY, keep_rate=0.25)
    dense = timm.create_model('sparsifiner_deit_tiny', **TINY, keep_rate=1.0)
    dense.load_state_dict(m.state_dict())
    m.train().set_recon_mode(True)
    x = torch.randn(2, 3, 32, 32)
    out = m(x)
    torch.testing.assert_close(out, dense.train()(x))
    maps = m.approx_attn_maps()
    assert all(a.shape == (2, 2, 16, 17) and a.requires_grad for a in maps)
    sum(a.sum() for a in maps).backward()
    assert m.blocks[0].attn.mask_predictor.proj_back_n.grad is not None
    dense.eval().set_record_attn(True)
    dense(x)
    assert all(a.shape == (2, 2, 17, 17) for a in dense.attn_maps())


# ---------------------------------------------------------------------------------------------------------------
# LV-ViT-S (official sparsifiner_lvvit.py as main.py builds it)
# ---------------------------------------------------------------------------------------------------------------

LV_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, reduce_n_factor=2, stem_chs=8)  # 17 tok


def test_lvvit_params_equal_the_official_class():
    # official SparsifinerLVViT(patch 16, 384, depth 16, 6 heads, mlp 3, p_emb '4_2', return_dense, reduce_n 6,
    # reduce_c 2), counted by running it: 26,420,112 (300 state-dict keys incl. BN buffers)
    m = timm.create_model('sparsifiner_lvvit_small', device='meta')
    assert count_params(m) == 26_420_112
    stem = 3 * 64 * 49 + 2 * 64 * 64 * 9 + 3 * 128 + 64 * 384 * 64 + 384
    block = 2 * 768 + 384 * 1152 + (384 * 384 + 384) + (384 * 1152 + 1152) + (1152 * 384 + 384)  # qkv no bias
    lvvit_s = stem + 384 + 197 * 384 + 16 * block + 768 + 2 * (384 * 1000 + 1000)  # head + aux_head
    assert lvvit_s == 26_151_824  # LV-ViT-S "26M"
    assert count_params(m) == lvvit_s + 16 * (2 * 197 * 32 + 2 * (64 * 32 + 32))
    assert len(m.state_dict()) == 300
    assert m.blocks[0].attn.qkv.bias is None  # qkv_bias=False (official default, unlike DeiT)
    assert m.blocks[0].skip_lam == 2.0 and m.norm.eps == 1e-5 and m.blocks[0].mlp.fc1.out_features == 1152
    cfg = m.pretrained_cfg
    assert cfg['tag'] == 'lvvit_init' and cfg['url'].endswith('lvvit_s-26M-224-83.3.pth.tar')
    assert cfg['classifier'] == ('head', 'aux_head') and cfg['first_conv'] == 'patch_embed.conv1'
    assert cfg['crop_pct'] == 0.9 and cfg['input_size'] == (3, 224, 224)


def test_lvvit_forward_backward_224_and_keep_rate():
    torch.manual_seed(0)
    m = timm.create_model('sparsifiner_lvvit_small', num_classes=10)
    x = torch.randn(2, 3, 224, 224)
    macs = {}
    m.eval()
    with torch.no_grad():
        for rate in (1.0, 0.25):
            m.set_keep_rate(rate)
            with count_attention_macs() as c:
                out = m(x)
            assert out.shape == (2, 10) and torch.isfinite(out).all()
            macs[rate] = (c.macs, out)
    assert macs[1.0][0] == 2 * 16 * 2 * 197 ** 2 * 384  # batch 2; 476.9 M per image, the paper's LV-ViT-S "MHSA"
    assert macs[0.25][0] == 2 * 16 * 6 * (197 + 196 * 50) * 128
    assert (macs[1.0][1] - macs[0.25][1]).abs().max() > 1e-4
    m.set_keep_rate([0.5] * 15 + [1.0])
    assert m.blocks[0].attn.mask_predictor.budget == 99 and m.blocks[15].attn.mask_predictor.budget == 197
    with pytest.raises(ValueError, match='keep_rate'):
        m.set_keep_rate([0.5] * 12)
    m.set_keep_rate(0.25)
    m.train()
    m(x).logsumexp(-1).sum().backward()
    assert m.patch_embed.conv1.weight.grad is not None and m.blocks[0].attn.qkv.weight.grad is not None
    assert m.blocks[0].attn.mask_predictor.proj_n.grad is None  # connectivity is detached (phase 2)


def test_lvvit_head_is_cls_plus_half_max_token_logits_in_eval():
    torch.manual_seed(0)
    m = timm.create_model('sparsifiner_lvvit_small', **LV_TINY, num_classes=5, keep_rate=0.5)
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        tokens = m.forward_features(x)
        assert tokens.shape == (2, 17, 32)
        aux = m.aux_logits(tokens)
        assert aux.shape == (2, 16, 5)
        torch.testing.assert_close(m(x), m.head(tokens[:, 0]) + 0.5 * aux.max(1)[0])
        assert m.forward_head(tokens, pre_logits=True).shape == (2, 32)
    m.train()
    with torch.no_grad():
        torch.testing.assert_close(m.forward_head(tokens), m.head(tokens[:, 0]))  # official training output


def test_lvvit_block_residual_scaling():
    torch.manual_seed(0)
    m = timm.create_model('sparsifiner_lvvit_small', **LV_TINY, keep_rate=1.0).eval()
    blk = m.blocks[0]
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        y = x + blk.attn(blk.norm1(x)) / 2
        y = y + blk.mlp(blk.norm2(y)) / 2
        torch.testing.assert_close(blk(x), y)
        s = m.patch_embed
        stem = s.relu(s.bn3(s.conv3(s.relu(s.bn2(s.conv2(s.relu(s.bn1(s.conv1(torch.ones(1, 3, 32, 32))))))))))
        assert s.conv1.stride == (2, 2) and s.proj.kernel_size == (4, 4) and s.conv1.bias is None
        torch.testing.assert_close(s(torch.ones(1, 3, 32, 32)), s.proj(stem).flatten(2).transpose(1, 2))


def test_lvvit_timm_contract():
    m = timm.create_model('sparsifiner_lvvit_small', **LV_TINY, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    final, inter = m.forward_intermediates(x)
    assert len(inter) == 2 and inter[0].shape == (2, 32, 4, 4) and final.shape == (2, 17, 32)
    f = timm.create_model('sparsifiner_lvvit_small', **LV_TINY, features_only=True, out_indices=(0, 1))
    assert [t.shape for t in f(x)] == [(2, 32, 4, 4)] * 2
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.aux_head.out_features == 3
    m.reset_classifier(0)
    assert m(x).shape == (2, 32) and isinstance(m.aux_head, torch.nn.Identity)
    assert {'pos_embed', 'cls_token'} <= set(m.no_weight_decay())
    assert m.group_matcher()['blocks']
    with pytest.raises(ValueError, match='sized for 17 tokens'):
        m(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match='global_pool'):
        timm.create_model('sparsifiner_lvvit_small', **LV_TINY, global_pool='avg')


def test_lvvit_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model('sparsifiner_lvvit_small', **LV_TINY)
    for mod in src.modules():  # make BN buffers non-trivial
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
    sd = src.state_dict()
    assert 'patch_embed.conv1.weight' in sd and 'aux_head.weight' in sd and 'blocks.0.attn.mask_predictor.proj_n' in sd
    # official layout (DDP 'module.' prefix inside a 'model' wrapper) through timm's pretrained path
    path = tmp_path / 'official.pth'
    torch.save({'model': {'module.' + k: v for k, v in sd.items()}}, path)
    m = timm.create_model('sparsifiner_lvvit_small', **LV_TINY, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in sd.items():
        torch.testing.assert_close(m.state_dict()[k], v)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), src.eval()(x))
    # another class count: both classifiers stay freshly initialised
    m5 = timm.create_model('sparsifiner_lvvit_small', **LV_TINY, num_classes=5, pretrained=True,
                           pretrained_cfg_overlay=dict(file=str(path)))
    assert m5.head.out_features == 5 and m5.aux_head.out_features == 5
    torch.testing.assert_close(m5.patch_embed.conv1.weight, src.patch_embed.conv1.weight)
    # a plain LV-ViT checkpoint (Token Labeling release layout): predictor freshly initialised
    plain = {k: v for k, v in sd.items() if '.mask_predictor.' not in k}
    out = checkpoint_filter_fn(plain, m)
    assert set(out) == set(m.state_dict())
    # a DeiT / ViT checkpoint does not fit
    deit = timm.create_model('sparsifiner_deit_tiny', **TINY)
    with pytest.raises(ValueError, match='DeiT'):
        checkpoint_filter_fn(deit.state_dict(), m)


@pytest.mark.filterwarnings('ignore:NOTE. The nodes obtained by tracing')  # the eval graph has aux_head, train not
def test_lvvit_fx_trace_matches_eager():
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor
    torch.manual_seed(0)
    m = timm.create_model('sparsifiner_lvvit_small', **LV_TINY).eval()
    fx = create_feature_extractor(
        m, train_return_nodes=['head'], eval_return_nodes=['head', 'aux_head'],
        tracer_kwargs=dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = fx(x)
        torch.testing.assert_close(out['head'] + 0.5 * out['aux_head'].max(1)[0], m(x))
    fx.train()
    fx(x)['head'].sum().backward()
    assert m.blocks[0].attn.qkv.weight.grad is not None


def test_record_attn_counts_its_attention_macs():
    """The teacher's ``record_attn`` path counted no attention MACs (the explicit softmax bypassed the count)."""
    m = timm.create_model('sparsifiner_deit_tiny', **TINY, keep_rate=1.0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), count_attention_macs() as plain:
        m(x)
    m.set_record_attn(True)
    with torch.no_grad(), count_attention_macs() as recorded:
        m(x)
    assert recorded.macs == plain.macs == 2 * 2 * 2 * 17 ** 2 * 32


def test_set_backends_per_layer_and_named_error():
    m = timm.create_model('sparsifiner_deit_tiny', **TINY, keep_rate=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m(x)
        m.set_backends(predictor='reference', attention='reference')
        assert all(b.attn.backends == {'predictor': 'reference', 'attention': 'reference'} for b in m.blocks)
        torch.testing.assert_close(m(x), ref)
    with pytest.raises(ValueError, match='backend must be one of'):
        m.set_backends(predictor='fused')
