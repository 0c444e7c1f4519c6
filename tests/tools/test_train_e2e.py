"""benchmarks/train_e2e.py: the synthetic JPEG folder, the two tools' command lines (the config's recipe as timm
train.py flags), the parsing of both logs, and (slow) a whole run of the digits config for 2 epochs through
tools/train.py and a stand-in for timm's train.py that checks what it is given and logs in timm's format."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from mmengine.config import Config
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location('train_e2e', REPO / 'benchmarks' / 'train_e2e.py')
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

def mm_line(split: str, epoch: int, idx: int, n: int, time: float, data: float) -> str:
    """A log line of mmengine's LoggerHook, as tools/train.py prints it."""
    return (f'12/04 19:13:33 - mmengine - INFO - Epoch({split}) [{epoch}][{idx}/{n}]  base_lr: 4.1600e-04 '
            f'lr: 4.1600e-04  eta: 0:00:03  time: {time:.4f}  data_time: {data:.4f}  grad_norm: 12.3  loss: 1.15')


def timm_line(epoch: int, idx: int, n: int, time_avg: float, data_avg: float) -> str:
    """A ``Train:`` line of timm's train.py: the last iteration's values, then the epoch's running averages."""
    return (f'Train: {epoch} [{idx:>4d}/{n} ({100. * (idx + 1) / n:>3.0f}%)]  Loss: 6.91 (6.91)  '
            f'Time: 0.130s,  984.62/s  ({time_avg:.3f}s, {128 / time_avg:>7.2f}/s)  LR: 1.000e-06  '
            f'Data: 0.002 ({data_avg:.3f})')


MM_LOG = '\n'.join([mm_line('train', 1, 2, 4, 0.9, 0.5), mm_line('train', 1, 4, 4, 0.8, 0.4),
                    mm_line('train', 2, 2, 4, 0.2, 0.01), mm_line('train', 2, 4, 4, 0.1, 0.03),
                    mm_line('val', 2, 2, 2, 0.05, 0.01)])
TIMM_LOG = '\n'.join([timm_line(0, 0, 10, 5.0, 1.0), timm_line(0, 9, 10, 0.6, 0.1), timm_line(1, 0, 10, 0.15, 0.01),
                      timm_line(1, 9, 10, 0.125, 0.004), timm_line(2, 4, 5, 0.110, 0.010)])


def test_write_folder_layout_sizes_and_errors(tmp_path):
    root = e2e.write_folder(str(tmp_path / 'inet'), images=7, classes=3, val_per_class=2, size=(40, 30))
    train = sorted(p.relative_to(Path(root, 'train')).as_posix() for p in Path(root, 'train').rglob('*.JPEG'))
    assert len(train) == 7 and [sum(f.startswith(f'n{c:08d}/') for f in train) for c in range(3)] == [3, 2, 2]
    assert len(list(Path(root, 'val').rglob('*.JPEG'))) == 6
    with Image.open(Path(root, 'train', train[0])) as img:
        assert img.size == (40, 30) and img.mode == 'RGB'
    assert not Path(f'{root}.tmp').exists()
    mtime = Path(root, 'train', train[0]).stat().st_mtime
    e2e.write_folder(root, images=7, classes=3, size=(40, 30))  # complete: left as it is
    assert Path(root, 'train', train[0]).stat().st_mtime == mtime
    for kwargs, match in ((dict(images=10, classes=1001), r'classes must be in \[1, 1000\]'),
                          (dict(images=2, classes=3), 'images must be >= classes'),
                          (dict(images=3, classes=3, val_per_class=0), 'val_per_class'),
                          (dict(images=3, classes=3, size=(4, 30)), 'size must be')):
        with pytest.raises(ValueError, match=match):
            e2e.write_folder(str(tmp_path / 'bad'), **kwargs)


def test_logs_are_parsed_after_the_warmup_epochs():
    mm = e2e.parse_attnzoo_log(MM_LOG, warmup_epochs=1)
    assert mm == pytest.approx(dict(s_per_iter=0.15, data_s=0.02, samples=2))  # epoch 2's lines, not val's
    timm = e2e.parse_timm_log(TIMM_LOG, warmup_epochs=1)  # epochs 1 and 2 (0-based), weighted 10 : 5
    assert timm['s_per_iter'] == pytest.approx((0.125 * 10 + 0.110 * 5) / 15)
    assert timm['data_s'] == pytest.approx((0.004 * 10 + 0.010 * 5) / 15) and timm['samples'] == 15
    with pytest.raises(ValueError, match='no Epoch\\(train\\) log line after epoch 2'):
        e2e.parse_attnzoo_log(MM_LOG, warmup_epochs=2)
    with pytest.raises(ValueError, match='no Train: log line'):
        e2e.parse_timm_log(TIMM_LOG, warmup_epochs=3)


def test_the_config_recipe_becomes_timm_train_flags():
    cfg = Config.fromfile(str(REPO / 'configs' / 'classification' / 'dinat_tiny.py'))
    flags = ' '.join(e2e.timm_recipe_args(cfg))
    for expected in ('--drop-path 0.2', '--mixup 0.8', '--cutmix 1.0', '--mixup-switch-prob 0.5', '--smoothing 0.1',
                     '--opt adamw', '--lr 0.001', '--weight-decay 0.05', '--opt-eps 1e-08', '--opt-betas 0.9 0.999',
                     '--clip-grad 5.0 --clip-mode norm', '--scale 0.08 1.0', '--aa rand-m9-mstd0.5-inc1',
                     '--train-interpolation random', '--reprob 0.25', '--remode pixel', '--color-jitter 0.4',
                     '-j 8', '--pin-mem'):
        assert expected in flags, expected
    digits = ' '.join(e2e.timm_recipe_args(Config.fromfile(str(REPO / 'configs' / 'classification' /
                                                                'demo_digits.py'))))
    assert '--input-size 3 32 32' in digits and '--color-jitter 0.0' in digits and '--aa' not in digits
    assert "depths=(1, 1, 2, 1)" in digits  # the architecture overrides through --model-kwargs


def test_command_lines_of_a_model_on_another_config(tmp_path):
    label, config, model = e2e.parse_run('swin_tiny_patch4_window7_224=dinat_tiny')
    assert label == 'swin_tiny_patch4_window7_224' and config.endswith('dinat_tiny.py')
    assert e2e.parse_run('dinat_tiny')[::2] == ('dinat_tiny', None)
    with pytest.raises(FileNotFoundError, match="config 'nope'"):
        e2e.parse_run('nope')
    def args_with(**changes):
        return SimpleNamespace(**{**dict(classes=10, epochs=3, log_interval=10, batch_size=64, workers=4,
                                         root=str(tmp_path), amp='bf16', compile='reduce-overhead',
                                         timm_train='train.py', timm_extra='--channels-last'), **changes})

    args = args_with()
    ours = e2e.attnzoo_command(config, model, args, 'wd')
    assert ours[ours.index('--compile') + 1] == 'reduce-overhead' and ours[ours.index('--amp') + 1] == 'bf16'
    for option in ('model.model_name=swin_tiny_patch4_window7_224', 'val_dataloader.dataset.model_name='
                   'swin_tiny_patch4_window7_224', 'model.num_classes=10', 'log_processor.window_size=10',
                   'train_dataloader.batch_size=64', 'train_dataloader.num_workers=4',
                   'train_dataloader.persistent_workers=True'):
        assert option in ours
    assert 'val_dataloader.persistent_workers=False' in e2e.attnzoo_command(config, model, args_with(workers=0), 'wd')
    timm = e2e.timm_command(config, model, args, 'out')
    assert timm[timm.index('--model') + 1] == 'swin_tiny_patch4_window7_224' and timm[timm.index('-b') + 1] == '64'
    assert timm[timm.index('-j') + 1] == '4' and timm[timm.index('--torchcompile-mode') + 1] == 'reduce-overhead'
    assert timm[timm.index('--amp-dtype') + 1] == 'bfloat16' and 'import attnzoo' in timm[2]
    assert timm[-1] == '--channels-last'


FAKE_TIMM_TRAIN = '''
import sys
assert 'attnzoo' in sys.modules, 'the launcher imports attnzoo first'
args = sys.argv[1:]
assert args[args.index('--model') + 1] == 'dinat_mini' and args[args.index('--num-classes') + 1] == '3', args
for epoch in range(int(args[args.index('--epochs') + 1])):
    print(f"Train: {epoch} [   2/3 (100%)]  Loss: 1.00 (1.00)  Time: 0.100s,   40.00/s  (0.{epoch + 2}00s,   20.00/s)  "
          f"LR: 1.000e-03  Data: 0.001 (0.010)", file=sys.stderr)
'''


@pytest.mark.slow
def test_whole_run_on_the_digits_config(tmp_path):
    fake = tmp_path / 'train.py'
    fake.write_text(FAKE_TIMM_TRAIN)
    out = tmp_path / 'res' / 'e2e'
    argv = ['--runs', 'dinat_mini=demo_digits', '--root', str(tmp_path / 'inet'), '--images', '12', '--classes', '3',
            '--size', '48', '36', '--epochs', '2', '--log-interval', '1', '--batch-size', '4',
            '--work-dir', str(tmp_path / 'wd'), '--out', str(out), '--timm-train', str(fake), '--timeout', '600']
    e2e.main(argv)
    rows = json.loads(Path(f'{out}.json').read_text())['rows']
    ours, timm = rows
    assert ours['tool'] == 'tools/train.py' and ours['samples'] == 3 and ours['s_per_iter'] > 0  # epoch 2: 3 iters
    assert ours['img_per_s'] == pytest.approx(4 / ours['s_per_iter'])
    assert timm['s_per_iter'] == pytest.approx(0.3) and timm['samples'] == 3  # epoch 1 (0-based) only
    table = Path(f'{out}.md').read_text()
    assert '| dinat_mini | tools/train.py | 4 |' in table and '| dinat_mini | timm train.py | 4 | 0.3000 |' in table
    e2e.main(argv[:-4] + ['--timeout', '600'])  # no --timm-train: the timm row says how to get it
    assert 'not run: pass --timm-train PATH' in Path(f'{out}.md').read_text()
    with pytest.raises(SystemExit):
        e2e.parse_args(['--epochs', '1', '--warmup-epochs', '1'])
