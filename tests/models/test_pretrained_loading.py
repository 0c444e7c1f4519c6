"""``pretrained=True`` in every family reads its file through attnzoo's checkpoint loader: a missing file, a text
file, a file needing trust and a failed download each get a named error; official training checkpoints (with
``argparse.Namespace`` args) load without trust; the DLGSANet registry, README and weights.md agree."""
import argparse
import os
import re
import urllib.error
from pathlib import Path

import pytest
import timm
import torch

import attnzoo  # noqa: F401  (registers the models)
from attnzoo.utils.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ['nat_mini', 'nat_isotropic_small', 'biformer_tiny', 'favit_b0', 'l2vit_tiny', 'sparsifiner_deit_tiny',
            'dlgsanet_tiny_x4']


class _RunsCode:
    def __reduce__(self):
        return os.getpid, ()


@pytest.mark.parametrize('name', FAMILIES)
def test_missing_file_names_the_path(name, tmp_path):
    path = tmp_path / 'missing_weights.pth'
    with pytest.raises(FileNotFoundError, match='missing_weights.pth'):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize('name', FAMILIES)
def test_text_file_is_not_a_checkpoint(name, tmp_path):
    path = tmp_path / 'weights.pth'
    path.write_text('<html>a download page, not weights</html>\n')
    with pytest.raises(CheckpointError, match='is not a checkpoint'):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_file_needing_trust_gets_our_advice(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'model': _RunsCode()}, path)
    with pytest.raises(CheckpointError, match=r'needs full unpickling.*getpid.*trusted=True') as e:
        timm.create_model('nat_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert 'weights_only' not in str(e.value)


@pytest.mark.parametrize('name', ['nat_mini', 'biformer_tiny', 'l2vit_tiny', 'sparsifiner_deit_tiny'])
def test_failed_download_gives_url_and_local_route(name, tmp_path, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError('[Errno -2] Name or service not known')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))  # no cached file
    url = timm.models.get_pretrained_cfg(name).url
    with pytest.raises(OSError, match='downloading the pretrained weights') as e:
        timm.create_model(name, pretrained=True)
    message = str(e.value)
    assert url in message and 'pretrained_cfg_overlay=dict(file=' in message and 'weights.md' in message


def test_official_training_checkpoint_loads_without_trust(tmp_path):
    """A DeiT/ConvNeXt-style file ({'model', 'args': Namespace, 'epoch'}) through pretrained_cfg_overlay(file=)."""
    source = timm.create_model('nat_mini')
    path = tmp_path / 'checkpoint-best.pth'
    torch.save({'model': source.state_dict(), 'args': argparse.Namespace(model='nat_mini'), 'epoch': 3}, path)
    model = timm.create_model('nat_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def _readme_dlgsanet_weights():
    rows = re.findall(r'^\| `(dlgsanet_\w+)` \|.*\| ([^|]+) \|$', (REPO / 'README.md').read_text(), re.M)
    return {name: weights.strip() for name, weights in rows}


def test_dlgsanet_registry_readme_and_weights_md_agree():
    readme = _readme_dlgsanet_weights()
    weights_md = (REPO / 'weights.md').read_text()
    assert len(readme) == 9
    for name, weights in readme.items():
        tag = timm.models.get_pretrained_cfg(name).tag
        released = weights != '–'
        assert (tag == 'div2k') == released, (name, tag, weights)
        size, scale = re.match(r'dlgsanet_(\w+)_x(\d)', name).groups()
        listed = re.search(rf'dlgsanet_{size}_x{scale}\.div2k|dlgsanet_\{{[^}}]*{size}[^}}]*\}}_x\{{[^}}]*{scale}',
                           weights_md)
        assert bool(listed) == released, (name, weights)


@pytest.mark.parametrize('name', ['dlgsanet_tiny_x2', 'dlgsanet_light_x3', 'dlgsanet_full_x4'])
def test_dlgsanet_released_weights_give_their_download_page(name):
    with pytest.raises(RuntimeError, match=r'no direct download URL; download them from https://drive\.google\.com'
                                           r'.*pretrained_cfg_overlay=dict\(file=PATH\)'):
        timm.create_model(name, pretrained=True)


def test_dlgsanet_full_x2_has_no_weights():
    with pytest.raises(RuntimeError, match='No pretrained weights exist for dlgsanet_full_x2'):
        timm.create_model('dlgsanet_full_x2', pretrained=True)
