"""DLGSANet: registration, params / paper MACs, official-checkpoint parity (TLC eval path), tiling, TLC."""
from pathlib import Path

import pytest
import timm
import torch

import attnzoo  # noqa: F401
from attnzoo.models.dlgsanet import DLGSANet, checkpoint_filter_fn, tiled_inference, tlc_windows
from attnzoo.utils.flops import count_macs, count_params

# (params [official code], official analytic flops() MACs at 1280x720 HR in G [paper column])
EXPECTED = {
    'dlgsanet_tiny_x2': (565_710, 128.09), 'dlgsanet_tiny_x3': (572_205, 56.91), 'dlgsanet_tiny_x4': (581_298, 32.02),
    'dlgsanet_light_x2': (745_188, 170.06), 'dlgsanet_light_x3': (751_683, 75.55),
    'dlgsanet_light_x4': (760_776, 42.51),
    'dlgsanet_full_x2': (4_733_724, 1097.27), 'dlgsanet_full_x3': (4_745_889, 487.56),
    'dlgsanet_full_x4': (4_762_920, 274.32),
}


def small(scale=4, **kw):
    args = dict(scale=scale, dim=12, groups=1, blocks=1, num_heads=2, group_channels=6, tlc_kernel=8)
    args.update(kw)
    torch.manual_seed(0)
    return DLGSANet(**args)


def test_registered():
    assert sorted(timm.list_models('dlgsanet_*')) == sorted(EXPECTED)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_params_macs_and_cfg(name):
    with torch.device('meta'):
        model = timm.create_model(name)
    params, gmacs = EXPECTED[name]
    assert count_params(model) == params
    s = model.scale
    assert round(model.flops((1280 // s, 720 // s)) / 1e9, 2) == gmacs
    cfg = model.pretrained_cfg
    assert cfg['task'] == 'super_resolution' and cfg['scale'] == s == int(name[-1])
    assert cfg['tlc_kernel'] == {2: 96, 3: 72, 4: 48}[s] == model.tlc_kernel
    assert cfg['classifier'] is None and model.num_classes == 0
    assert attnzoo.models.dlgsanet.sr_pretrained_cfg(name)['scale'] == s


def test_num_classes_rejected():
    with pytest.raises(ValueError, match='num_classes'):
        timm.create_model('dlgsanet_tiny_x4', num_classes=10)


def test_forward_shapes_odd_sizes_and_backward():
    model = small(scale=3)
    x = torch.rand(2, 3, 13, 17, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 3, 39, 51)
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert model(x[:1]).shape == (1, 3, 39, 51)
    with pytest.raises(ValueError, match='image batch'):
        model(torch.rand(1, 4, 8, 8))


def test_grad_checkpointing_same_grads():
    model = small(groups=2)
    x = torch.rand(1, 3, 10, 10)
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(ref, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_count_macs_includes_dynamic_conv():
    model = small().eval()
    macs = count_macs(model, (3, 16, 16))
    assert macs > 16 * 16 * 12 * 49  # the dynamic conv alone


def test_tlc_grid_matches_official_rule():
    # 52 px with a 48 window: two windows at 0 and 4; 100 px with 96: 0 and 4; smaller maps: one window
    assert tlc_windows(52, 60, 48) == (48, 48, [(0, 0), (0, 12), (4, 0), (4, 12)])
    assert tlc_windows(24, 30, 48) == (24, 30, [(0, 0)])
    kh, kw, corners = tlc_windows(130, 50, 48)
    assert (kh, kw) == (48, 48) and sorted({i for i, _ in corners}) == [0, 41, 82]


def test_tlc_only_changes_large_inputs():
    model = small()
    x_small, x_large = torch.rand(1, 3, 8, 7), torch.rand(1, 3, 13, 11)
    model.train()
    with torch.no_grad():
        glob_small, glob_large = model(x_small), model(x_large)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x_small), glob_small)  # map <= window: TLC == global
        assert (model(x_large) - glob_large).abs().max() > 1e-6  # TLC windows differ from global
        model.set_tlc(False)
        torch.testing.assert_close(model(x_large), glob_large)


def test_tiled_matches_whole_image_for_local_model():
    # receptive field of the local-only model: 1 + (3 + 3 + 1) + 1 + 1 + 1 = 11 LR px < tile_pad
    model = small(groups=1, blocks=1, block_type='idynamic').eval()
    x = torch.rand(1, 3, 29, 35)
    with torch.no_grad():
        whole = model(x)
        tiled = tiled_inference(model, x, 4, tile=12, tile_pad=12)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_forward_tiled_whole_image_when_tile_covers_it():
    model = small().eval()
    x = torch.rand(1, 3, 8, 8)  # <= tlc_kernel 8: one tile
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tiled(x), model(x))


# ------------------------------------------------------------------------------------------------------------------
# official checkpoints
# ------------------------------------------------------------------------------------------------------------------
def official_like_state_dict(model: DLGSANet) -> dict:
    """Our state dict renamed to the official layout (inverse of checkpoint_filter_fn), for round trips."""
    out = {}
    per_block = 2 if model.block_type == 'sparseedge' else 1
    names = {'norm1': ('norm1.body', 'norm3.body'), 'norm2': ('norm2.body', 'norm4.body')}
    for k, v in model.state_dict().items():
        if k.startswith('conv_first.'):
            k = k.replace('conv_first.', 'overlap_embed.0.proj.')
        elif k.startswith('conv_after_body.'):
            k = k.replace('conv_after_body.', f'deep_feature_extraction.{len(model.depths)}.')
        elif k.startswith('stages.'):
            parts = k.split('.')
            g = int(parts[1])
            if parts[2] == 'conv':
                k = f'deep_feature_extraction.{g}.body.{model.depths[g] * per_block}.' + '.'.join(parts[3:])
            else:
                j, layer, rest = int(parts[3]), parts[4], parts[5:]
                local = layer == 'local_layer'
                idx = j * per_block + (0 if local else 1)
                if rest[0] in names:
                    rest = [names[rest[0]][0 if local else 1]] + rest[1:]
                elif rest[0] == 'ffn':
                    rest = ['IDynamic_ffn' if local else 'restormer_ffn'] + rest[1:]
                elif local and rest[1] == 'kernel_gen':
                    rest = ['IDynamicDWConv', 'conv', {'0': 'conv1.0', '1': 'conv1.1', '2': 'conv2.0'}[rest[2]]] \
                        + rest[3:]
                elif local:
                    rest = ['IDynamicDWConv'] + rest[1:]
                else:
                    rest = ['restormer_attn'] + rest[1:]
                k = f'deep_feature_extraction.{g}.body.{idx}.' + '.'.join(rest)
        out[k] = v
    return out


def test_filter_fn_wrappers_identity_and_errors():
    model = small(groups=2, blocks=2)
    ours = model.state_dict()
    official = official_like_state_dict(model)
    assert set(official) != set(ours)
    for ckpt in (official, {'params': official}, {'params_ema': official}, ours):
        converted = checkpoint_filter_fn(ckpt, model)
        assert set(converted) == set(ours)
    # 'params' (what BasicSR's test mode loads) wins over 'params_ema'; key= picks explicitly
    ema = {k: v + 1 for k, v in official.items()}
    both = {'params': official, 'params_ema': ema}
    assert torch.equal(checkpoint_filter_fn(both, model)['conv_first.weight'], ours['conv_first.weight'])
    assert torch.equal(checkpoint_filter_fn(both, model, key='params_ema')['conv_first.weight'],
                       ours['conv_first.weight'] + 1)
    with pytest.raises(ValueError, match='do not map'):
        checkpoint_filter_fn({**official, 'deep_feature_extraction.9.weight': torch.zeros(1)}, model)


def test_pretrained_overlay_loads_basicsr_file(tmp_path):
    src = timm.create_model('dlgsanet_tiny_x4', dim=12, groups=1, blocks=1, num_heads=2)
    path = tmp_path / 'official.pth'
    torch.save({'params': official_like_state_dict(src)}, path)
    model = timm.create_model('dlgsanet_tiny_x4', dim=12, groups=1, blocks=1, num_heads=2, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


PARITY_CASES = {
    'dlgsanet_tiny_x4.pt': ('dlgsanet_tiny_x4', {}),
    'dlgsanet_reduced_x2.pt': ('dlgsanet_full_x2', dict(groups=2, blocks=2)),
}


def build_from_fixture(fixture: dict, name: str, overrides: dict) -> DLGSANet:
    kw = fixture['official_kwargs']
    model = timm.create_model(name, **overrides)
    assert (model.dim, len(model.depths), model.depths[0], model.scale, model.tlc_kernel) == \
        (kw['dim'], kw['groups'], kw['blocks'], kw['upscale'], kw['tlc_kernel'])
    assert (model.group_channels, model.num_heads, model.kernel_size) == \
        (kw['idynamic_num_heads'], kw['restormer_num_heads'], kw['window_size'])
    model.load_state_dict(checkpoint_filter_fn({'params': fixture['state_dict']}, model), strict=True)
    return model.eval()


@pytest.mark.parametrize('case', sorted(PARITY_CASES))
def test_parity_with_official_fixture(parity_dir: Path, case):
    path = parity_dir / case
    if not path.is_file():
        pytest.skip(f'{path} not found')
    fixture = torch.load(path, weights_only=False)
    name, overrides = PARITY_CASES[case]
    model = build_from_fixture(fixture, name, overrides)
    tol = fixture['atol_suggested_float32']
    assert tol <= 1e-4
    with torch.no_grad():
        for x, ref in zip(fixture['inputs'], fixture['outputs']):
            # one sample at a time, as the official TLC path (batch 1) was run
            out = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
            err = (out - ref).abs().max().item()
            assert err <= tol, f'{case} {tuple(x.shape)}: max abs err {err:.3g} > {tol}'
            if x.shape[-1] <= 32:  # batched TLC is per-sample TLC (checked on the small input to save time)
                torch.testing.assert_close(model(x), out, atol=1e-5, rtol=0)
