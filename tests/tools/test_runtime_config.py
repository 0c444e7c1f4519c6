"""The shared runtime config: a visualizer with a local backend that one --cfg-options switches to TensorBoard."""
from pathlib import Path

from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'

def test_default_visualizer_is_local_and_one_option_switches_it():
    cfg = Config.fromfile(str(CONFIGS / 'classification' / 'demo_digits.py'))
    assert cfg.visualizer.type == 'Visualizer'
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['LocalVisBackend']
    cfg.merge_from_dict({'visualizer.vis_backends.0.type': 'TensorboardVisBackend'})
    assert [b['type'] for b in cfg.visualizer.vis_backends] == ['TensorboardVisBackend']

def test_visualizer_builds_and_writes_scalars(tmp_path):
    from mmengine.visualization import Visualizer
    cfg = Config.fromfile(str(CONFIGS / '_base_' / 'default_runtime.py'))
    vis = Visualizer.get_instance('attnzoo_test_vis', vis_backends=cfg.visualizer.vis_backends,
                                  save_dir=str(tmp_path))
    vis.add_scalars({'loss': 1.5}, step=1)
    assert (tmp_path / 'vis_data' / 'scalars.json').read_text().strip().startswith('{')
