"""Layering: ``attnzoo.models.dense`` needs no mmengine, and ``import attnzoo.tasks`` neither imports mmdet / mmseg,
nor registers the OpenMMLab backbones (only ``import attnzoo.integrations`` does), nor patches timm (the
classification dataset makes its posterize call itself). Checked in a fresh
interpreter, whose ``sys.modules`` no other test has filled."""
import subprocess
import sys

_CHECK = '''
import sys
import attnzoo.models.dense
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mmengine', 'mmdet', 'mmseg', 'mmcv'))
assert not loaded, f'attnzoo.models.dense imported {loaded}'
import attnzoo.tasks
from mmengine.registry import MODELS
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mmdet', 'mmseg', 'mmcv') or
                m.startswith('attnzoo.integrations'))
assert not loaded, f'attnzoo.tasks imported {loaded}'
registered = sorted(n for n in ('AttnZooBackbone', 'DiNAT', 'NAT', 'BiFormer') if n in MODELS.module_dict)
assert not registered, f'attnzoo.tasks registered {registered} in mmengine MODELS'
from timm.data import auto_augment
assert auto_augment.NAME_TO_OP['Posterize'] is auto_augment.posterize, 'attnzoo.tasks patched timm on import'
import attnzoo.integrations
assert 'DiNAT' in MODELS.module_dict
print('ok')
'''


def test_tasks_import_no_openmmlab_and_dense_backbone_no_mmengine():
    out = subprocess.run([sys.executable, '-c', _CHECK], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr[-2000:]
