"""attnzoo.tasks.classification: model wrapper, ImageNet-folder dataset, metric, optimizer
constructor, CPU AMP wrapper, digits writer and the classification configs (all in-process, fast)."""
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import DATASETS, METRICS, MODELS, OPTIM_WRAPPERS, PARAM_SCHEDULERS
from PIL import Image
from torch.utils.data import default_collate

import attnzoo  # noqa: F401
from attnzoo.tasks import classification as cls
from attnzoo.tasks.classification import (AutoAmpOptimWrapper, ClsAccuracy, ImageNetFolder,
                                          TimmClassifier, TimmOptimWrapperConstructor,
                                          format_summary)
from attnzoo.tasks.demo_data import write_digits_imagefolder

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'classification'
TINY_DINAT = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), kernel_size=3,
                  dilations=((2,), (1,), (1,), (1,)), mlp_ratio=1.0)


def make_folder(root: Path, classes=('cat', 'dog', 'eel'), n_train=4, n_val=2, size=24, skip_val=()):
    rng = np.random.RandomState(0)
    for split, n in (('train', n_train), ('val', n_val)):
        for c in classes:
            if split == 'val' and c in skip_val:
                continue
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.randint(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f'{i}.JPEG')
    return root


# ------------------------------------------------------------------------------------ data
def test_digits_writer_split_is_stratified_and_deterministic(tmp_path):
    root = write_digits_imagefolder(str(tmp_path / 'd1'), size=16, val_fraction=0.2, seed=0)
    files = {s: sorted(p.relative_to(Path(root)).as_posix() for p in (Path(root) / s).rglob('*.png'))
             for s in ('train', 'val')}
    assert len(files['train']) + len(files['val']) == 1797
    assert 0.19 < len(files['val']) / 1797 < 0.21
    for c in range(10):  # every class in both splits, ~20 % in val
        n_tr = sum(f.startswith(f'train/{c}/') for f in files['train'])
        n_va = sum(f.startswith(f'val/{c}/') for f in files['val'])
        assert n_va == round((n_tr + n_va) * 0.2)
    img = Image.open(Path(root) / files['val'][0])
    assert img.size == (16, 16)
    root2 = write_digits_imagefolder(str(tmp_path / 'd2'), size=16, val_fraction=0.2, seed=0)
    assert files['val'] == sorted(p.relative_to(Path(root2)).as_posix() for p in (Path(root2) / 'val').rglob('*.png'))
    assert not list(tmp_path.glob('*.tmp-*'))
    with pytest.raises(ValueError, match='val_fraction'):
        write_digits_imagefolder(str(tmp_path / 'd3'), val_fraction=1.5)


def test_imagenet_folder_classes_transforms_and_data_config(tmp_path):
    root = make_folder(tmp_path / 'inet', skip_val=('dog',))
    train = ImageNetFolder(str(root), split='train', model_name='dinat_mini',
                           data_config=dict(input_size=(3, 32, 32)),
                           transform=dict(auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25, re_mode='pixel',
                                          interpolation='random'))
    val = ImageNetFolder(str(root), split='val', model_name='dinat_mini', data_config=dict(input_size=(3, 32, 32)))
    assert train.metainfo['classes'] == ('cat', 'dog', 'eel') == val.metainfo['classes']
    assert len(train) == 12 and len(val) == 4
    # val has no 'dog' folder: 'eel' must still be label 2 (classes come from train/)
    assert sorted({t for _, t in val.dataset.reader.samples}) == [0, 2]
    item = train[0]
    assert item['inputs'].shape == (3, 32, 32) and item['inputs'].dtype == torch.float32
    assert isinstance(item['data_samples'], int)
    names = ' '.join(type(t).__name__ for t in train.transform.transforms)
    assert 'RandAugment' in names and 'RandomErasing' in names and 'RandomResizedCrop' in names
    # eval side: model's pretrained_cfg (bicubic, crop_pct 0.875, ImageNet mean/std) -> resize 36, crop 32
    assert val.data_config['crop_pct'] == pytest.approx(0.875)
    assert val.data_config['interpolation'] == 'bicubic'
    assert val.data_config['mean'] == timm.data.IMAGENET_DEFAULT_MEAN
    assert val.transform.transforms[0].size == math.floor(32 / 0.875)
    assert val[0]['inputs'].shape == (3, 32, 32)
    # built through the registry, as the Runner does
    ds = DATASETS.build(dict(type='ImageNetFolder', data_root=str(root), split='val',
                             data_config=dict(input_size=(3, 24, 24), crop_pct=1.0)))
    assert ds[0]['inputs'].shape == (3, 24, 24)


def test_imagenet_folder_errors_and_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match='data_root'):
        ImageNetFolder(str(tmp_path / 'missing'))
    with pytest.raises(ValueError, match='prepare'):
        ImageNetFolder(str(tmp_path / 'x'), prepare='imagenet21k')
    root = tmp_path / 'digits'
    ds = ImageNetFolder(str(root), split='val', prepare=dict(type='sklearn_digits', size=16),
                        data_config=dict(input_size=(3, 16, 16), crop_pct=1.0))
    assert len(ds) == 359 and ds.metainfo['classes'] == tuple(str(i) for i in range(10))


def make_unreadable_images(root: Path, split: str = 'val') -> list:
    """Add an empty file to ``split/cat`` and a truncated JPEG to ``split/eel``; returns their paths."""
    empty, truncated = root / split / 'cat' / 'empty.JPEG', root / split / 'eel' / 'truncated.JPEG'
    empty.write_bytes(b'')
    whole = (root / split / 'eel' / '0.JPEG').read_bytes()
    truncated.write_bytes(whole[:len(whole) // 2])
    return [empty, truncated]


def test_imagenet_folder_marks_unreadable_images_instead_of_replacing_them(tmp_path):
    root = make_folder(tmp_path / 'inet', n_val=4)
    for split in ('val', 'train'):
        bad = make_unreadable_images(root, split)
        ds = ImageNetFolder(str(root), split=split, data_config=dict(input_size=(3, 16, 16)))
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds), collate_fn=default_collate)))
        assert batch['inputs'].shape == (len(ds), 3, 16, 16)  # the markers collate with the images
        labels = batch['data_samples'].tolist()
        assert labels.count(cls.BAD_IMAGE_LABEL) == 2 and ds.bad_images_seen == 2
        files = [p for p, _ in ds.dataset.reader.samples]
        assert sorted(f for f, y in zip(files, labels) if y == cls.BAD_IMAGE_LABEL) == sorted(map(str, bad))
        # every readable image keeps its own label: nothing stands in for the bad files
        assert [y for y in labels if y != cls.BAD_IMAGE_LABEL] == [t for f, t in ds.dataset.reader.samples
                                                                 if f not in map(str, bad)]


def test_imagenet_folder_on_bad_image_error_names_the_file(tmp_path):
    root = make_folder(tmp_path / 'inet')
    empty, _ = make_unreadable_images(root)
    ds = ImageNetFolder(str(root), split='val', data_config=dict(input_size=(3, 16, 16)), on_bad_image='error')
    index = [p for p, _ in ds.dataset.reader.samples].index(str(empty))
    with pytest.raises(ValueError, match=f'{empty}: not a readable image'):
        ds[index]
    with pytest.raises(ValueError, match=r"on_bad_image: expected one of \('skip', 'error'\)"):
        ImageNetFolder(str(root), split='val', on_bad_image='ignore')


def test_evaluation_counts_each_readable_image_once(tmp_path):
    """The issue's case: 20 readable and 2 corrupt images in val; the test summary used to say samples=22."""
    from mmengine.runner import Runner
    root = make_folder(tmp_path / 'inet', classes=('cat', 'eel'), n_train=1, n_val=10)
    make_unreadable_images(root)
    runner = Runner(
        model=dict(type='TimmClassifier', model_name='dinat_mini', num_classes=2, model_kwargs=TINY_DINAT),
        work_dir=str(tmp_path / 'work'),
        test_dataloader=dict(batch_size=5, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                             collate_fn=dict(type='default_collate'),
                             dataset=dict(type='ImageNetFolder', data_root=str(root), split='val',
                                          data_config=dict(input_size=(3, 16, 16)))),
        test_evaluator=dict(type='ClsAccuracy', topk=(1,)), test_cfg=dict(),
        custom_hooks=[dict(type='ClsSummaryHook')], default_hooks=dict(checkpoint=None), log_level='WARNING')
    metrics = runner.test()
    assert metrics['accuracy/unreadable'] == 2
    assert metrics['accuracy/top1'] in {100.0 * k / 20 for k in range(21)}  # out of the 20 readable images
    summary = next(h for h in runner.hooks if isinstance(h, cls.ClsSummaryHook)).summary
    assert 'samples=20 unreadable=2' in summary


def test_accuracy_leaves_unreadable_images_out():
    metric = ClsAccuracy(topk=(1,))
    scores = torch.tensor([[.9, .1], [.9, .1], [.1, .9]])
    metric.process({}, [dict(pred_score=s, gt_label=g) for s, g in zip(scores, [0, cls.BAD_IMAGE_LABEL, 0])])
    assert metric.evaluate(size=3) == {'accuracy/top1': 50.0, 'accuracy/unreadable': 1}


# ------------------------------------------------------------------------------------ model
def test_classifier_loss_leaves_unreadable_images_out():
    torch.manual_seed(0)
    model = TimmClassifier('dinat_mini', num_classes=3, model_kwargs=TINY_DINAT, mixup=None, smoothing=0.0).eval()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, cls.BAD_IMAGE_LABEL, 2])
    loss = model(x, y, mode='loss')['loss']
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(model(x[[0, 2]]), y[[0, 2]]))
    only_bad = model(x[1:2], y[1:2], mode='loss')['loss']  # no readable image: no gradient, every parameter used
    only_bad.backward()
    assert only_bad == 0 and all(p.grad is not None and not p.grad.any() for p in model.parameters())
def test_classifier_loss_predict_and_mixup():
    torch.manual_seed(0)
    model = MODELS.build(dict(type='TimmClassifier', model_name='dinat_mini', num_classes=5,
                              model_kwargs=TINY_DINAT,
                              mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0), smoothing=0.1))
    assert isinstance(model, TimmClassifier)
    assert isinstance(model.train_loss, timm.loss.SoftTargetCrossEntropy) and model.mixup_fn is not None
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 4])
    data = model.data_preprocessor(dict(inputs=x, data_samples=y), training=True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss'} and torch.isfinite(losses['loss']) and losses['loss'] > 0
    losses['loss'].backward()
    assert model.model.head.fc.weight.grad is not None
    odd = model(x[:3], y[:3], mode='loss')  # odd batch: no mixup, smoothed soft targets
    assert torch.isfinite(odd['loss'])
    model.eval()
    preds = model(x, y, mode='predict')
    assert len(preds) == 4 and preds[0]['pred_score'].shape == (5,)
    assert preds[0]['gt_label'] == 0 and 0 <= preds[0]['pred_label'] < 5
    assert torch.allclose(preds[1]['pred_score'].sum(), torch.tensor(1.0))
    assert model(x, mode='tensor').shape == (4, 5)
    with pytest.raises(ValueError, match='mode'):
        model(x, y, mode='bogus')


def test_classifier_losses_without_mixup_and_init_weights_keeps_weights():
    m1 = TimmClassifier('dinat_mini', num_classes=3, model_kwargs=TINY_DINAT, mixup=None, smoothing=0.1)
    assert isinstance(m1.train_loss, timm.loss.LabelSmoothingCrossEntropy)
    m2 = TimmClassifier('dinat_mini', num_classes=3, model_kwargs=TINY_DINAT, mixup=None, smoothing=0.0)
    assert isinstance(m2.train_loss, torch.nn.CrossEntropyLoss)
    before = {k: v.clone() for k, v in m1.state_dict().items()}
    m1.init_weights()  # the Runner calls this; it must not re-initialise a (pretrained) timm model
    assert all(torch.equal(before[k], v) for k, v in m1.state_dict().items())


def test_classifier_argument_errors():
    with pytest.raises(ValueError, match='close matches'):
        TimmClassifier('dinat_minii', num_classes=3)
    with pytest.raises(ValueError, match='num_classes'):
        TimmClassifier('dinat_mini', num_classes=0)
    with pytest.raises(ValueError, match='smoothing'):
        TimmClassifier('dinat_mini', num_classes=3, smoothing=1.5)


# ------------------------------------------------------------------------------------ metric
def test_accuracy_metric_top1_top5():
    metric = METRICS.build(dict(type='ClsAccuracy', topk=(1, 5)))
    metric.dataset_meta = dict(classes=tuple('abcdef'))
    scores = torch.tensor([[.9, .1, 0, 0, 0, 0],    # gt 0: top1 hit
                           [.1, .2, .3, .4, .5, .6],  # gt 0: rank 6 -> miss top5
                           [.1, .2, .3, .4, .5, .6],  # gt 1: rank 5 -> top5 hit
                           [.0, .1, .9, 0, 0, 0]])   # gt 2: top1 hit
    gts = [0, 0, 1, 2]
    metric.process({}, [dict(pred_score=s, gt_label=g) for s, g in zip(scores, gts)])
    res = metric.evaluate(size=4)
    assert res['accuracy/top1'] == pytest.approx(50.0)
    assert res['accuracy/top5'] == pytest.approx(75.0)
    # fewer classes than k: top5 over 3 classes is always right
    m3 = ClsAccuracy(topk=(1, 5))
    m3.process({}, [dict(pred_score=torch.tensor([.2, .3, .5]), gt_label=0)])
    assert m3.evaluate(size=1) == {'accuracy/top1': 0.0, 'accuracy/top5': 100.0}
    with pytest.raises(ValueError, match='topk'):
        ClsAccuracy(topk=(0,))


def test_format_summary():
    line = format_summary({'accuracy/top1': 91.234, 'accuracy/top5': 99.0}, 12.34, epochs=3)
    assert line == 'Final: top1=91.23 top5=99.00 epochs=3 time=12.3s'


# ------------------------------------------------------------------------------------ optimisation
def test_timm_optimizer_constructor_weight_decay_and_layer_decay():
    model = TimmClassifier('dinat_mini', num_classes=3, model_kwargs=TINY_DINAT)
    ctor = TimmOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, betas=[0.9, 0.99]),
             clip_grad=dict(max_norm=5.0)))
    wrapper = ctor(model)
    assert isinstance(wrapper, OptimWrapper) and isinstance(wrapper.optimizer, torch.optim.AdamW)
    assert wrapper.clip_grad_kwargs['max_norm'] == 5.0
    names = {id(p): n for n, p in model.model.named_parameters()}
    no_decay = {names[id(p)] for g in wrapper.optimizer.param_groups if g['weight_decay'] == 0 for p in g['params']}
    decay = {names[id(p)] for g in wrapper.optimizer.param_groups if g['weight_decay'] > 0 for p in g['params']}
    assert no_decay | decay == set(names.values())
    assert set(model.model.no_weight_decay()) <= no_decay  # rpb tables
    assert any(n.endswith('.bias') for n in no_decay) and 'head.fc.weight' in decay
    assert wrapper.optimizer.param_groups[0]['betas'] == (0.9, 0.99)

    # layer decay: timm's lr_scale is folded into each group's lr (mmengine schedulers ignore lr_scale)
    ctor = TimmOptimWrapperConstructor(dict(optimizer=dict(type='adamw', lr=1e-3, weight_decay=0.05)),
                                       paramwise_cfg=dict(layer_decay=0.5))
    groups = ctor(model).optimizer.param_groups
    scales = sorted({g['lr_scale'] for g in groups})
    assert len(scales) > 2 and scales[-1] == pytest.approx(1.0)
    for g in groups:
        assert g['lr'] == pytest.approx(1e-3 * g['lr_scale'])
    with pytest.raises(ValueError, match='optimizer'):
        TimmOptimWrapperConstructor(dict(type='OptimWrapper'))


def test_auto_amp_wrapper_runs_bf16_on_cpu():
    if torch.cuda.is_available():
        pytest.skip('CPU behaviour')
    lin = torch.nn.Linear(4, 2)
    wrapper = OPTIM_WRAPPERS.build(dict(type='AutoAmpOptimWrapper', optimizer=torch.optim.SGD(lin.parameters(), lr=0.1),
                                        clip_grad=dict(max_norm=1.0)))
    assert isinstance(wrapper, AutoAmpOptimWrapper) and wrapper.cast_dtype == torch.bfloat16
    with wrapper.optim_context(lin):
        out = lin(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    before = lin.weight.detach().clone()
    wrapper.update_params(out.float().pow(2).mean())
    assert not torch.equal(before, lin.weight)
    state = wrapper.state_dict()
    wrapper.load_state_dict(state)
    with pytest.raises(ValueError, match='bfloat16'):
        AutoAmpOptimWrapper(optimizer=torch.optim.SGD(lin.parameters(), lr=0.1), dtype='float16')


# ------------------------------------------------------------------------------------ configs
DROP_PATH = dict(nat_mini=.2, nat_tiny=.2, nat_small=.3, nat_base=.5, dinat_mini=.2, dinat_tiny=.2, dinat_small=.3,
                 dinat_base=.5, dinat_large=.35, dinat_large_384=.35, dinat_large_384_11x11=.35,
                 dinat_s_tiny=.2, dinat_s_small=.3, dinat_s_base=.5, dinat_s_large=.35, dinat_s_large_384=.35,
                 nat_isotropic_small=.1, nat_isotropic_base=.4, dinat_isotropic_small=.1, dinat_isotropic_base=.4)


def test_one_config_per_nat_variant_with_the_paper_recipe():
    present = {p.stem for p in CONFIGS.glob('*.py') if p.stem.split('_')[0] in ('nat', 'dinat')}
    assert present == set(DROP_PATH)
    for name, dp in DROP_PATH.items():
        cfg = Config.fromfile(str(CONFIGS / f'{name}.py'))
        assert timm.is_model(name)
        assert cfg.model.type == 'TimmClassifier' and cfg.model.model_name == name
        assert cfg.model.model_kwargs.drop_path_rate == dp
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            assert cfg[key].dataset.model_name == name, (name, key)
            assert cfg[key].dataset.data_root == 'data/imagenet'
        assert cfg.model.num_classes == 1000 and cfg.model.smoothing == 0.1
        train_tf = cfg.train_dataloader.dataset.transform
        assert train_tf.auto_augment == 'rand-m9-mstd0.5-inc1' and train_tf.re_prob == 0.25
        opt = cfg.optim_wrapper.optimizer
        assert opt.type == 'AdamW' and cfg.optim_wrapper.constructor == 'TimmOptimWrapperConstructor'
        assert cfg.optim_wrapper.clip_grad.max_norm == 5.0
        ema = [h for h in cfg.custom_hooks if h.type == 'EMAHook']
        assert bool(ema) == name.endswith('isotropic_base'), name
        if ema:  # timm ModelEmaV2 decay 0.9998
            assert ema[0].momentum == pytest.approx(2e-4)
        if 'large' in name:  # ImageNet-22k -> 1k fine-tunes
            assert opt.lr == 5e-5 and cfg.train_cfg.max_epochs == 30 and cfg.model.mixup is None
            if '384' in name:
                assert cfg.val_dataloader.dataset.data_config.input_size == (3, 384, 384)
                assert cfg.val_dataloader.dataset.data_config.crop_pct == 1.0
        else:
            assert opt.lr == 1e-3 and opt.weight_decay == 0.05
            assert cfg.auto_scale_lr.base_batch_size == 1024
            assert cfg.train_dataloader.batch_size * 8 == 1024
            assert cfg.train_cfg.max_epochs == 310  # 300 + timm's 10 cooldown epochs
            assert cfg.model.mixup.mixup_alpha == 0.8 and cfg.model.mixup.cutmix_alpha == 1.0
            warm = cfg.param_scheduler[0]
            assert warm.type == 'LinearLR' and warm.end == (50 if ema else 20)
            assert cfg.param_scheduler[1].type == 'CosineAnnealingLR' and cfg.param_scheduler[1].end == 300
            assert all(s.convert_to_iter_based for s in cfg.param_scheduler)


@pytest.mark.filterwarnings('ignore:Detected call of')
def test_nat_config_builds_and_lr_schedule_follows_the_recipe():
    cfg = Config.fromfile(str(CONFIGS / 'nat_mini.py'))
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(19.98e6, rel=0.005)
    wrapper = TimmOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=cfg.optim_wrapper.optimizer))(model)
    epoch_len = 4
    scheds = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=wrapper, epoch_length=epoch_len))
              for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs * epoch_len):
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        for s in scheds:
            s.step()
    assert lrs[0] == pytest.approx(1e-6, rel=1e-3)
    assert lrs[20 * epoch_len] == pytest.approx(1e-3, rel=1e-3)
    assert max(lrs) == pytest.approx(1e-3, rel=1e-6)
    assert lrs[160 * epoch_len] == pytest.approx((1e-3 + 5e-6) / 2, rel=1e-2)
    assert lrs[300 * epoch_len] == pytest.approx(5e-6, rel=1e-3)
    assert lrs[-1] == pytest.approx(5e-6, rel=1e-3)  # cooldown


def test_demo_config_is_small_and_uses_the_imagenet_folder_path():
    cfg = Config.fromfile(str(CONFIGS / 'demo_digits.py'))
    assert cfg.train_dataloader.dataset.type == 'ImageNetFolder'
    assert cfg.train_dataloader.dataset.prepare.type == 'sklearn_digits'
    assert cfg.model.model_name.startswith('dinat')
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) < 3e6
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_registries_resolve_every_component():
    for reg, name in ((MODELS, 'TimmClassifier'), (DATASETS, 'ImageNetFolder'), (METRICS, 'ClsAccuracy'),
                      (OPTIM_WRAPPERS, 'AutoAmpOptimWrapper')):
        assert reg.get(name) is not None
    from mmengine.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS
    assert HOOKS.get('ClsSummaryHook') is cls.ClsSummaryHook
    assert OPTIM_WRAPPER_CONSTRUCTORS.get('TimmOptimWrapperConstructor') is TimmOptimWrapperConstructor


# ------------------------------------------------------------------------------------ tool glue
def test_setup_launcher_and_cpu_threads(monkeypatch):
    from attnzoo.tasks.runtime import setup_cpu_threads, setup_launcher
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    setup_launcher(cfg, 'none')
    assert cfg.launcher == 'none' and cfg.get('model_wrapper_cfg') is None
    with pytest.raises(ValueError, match='launcher'):
        setup_launcher(cfg, 'horovod')
    if not torch.cuda.is_available():
        monkeypatch.delenv('MASTER_PORT', raising=False)
        with pytest.raises(RuntimeError, match='torchrun'):
            setup_launcher(cfg, 'pytorch')
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    n = torch.get_num_threads()
    try:
        setup_cpu_threads(Config(dict(cpu_threads=1)))
        assert torch.get_num_threads() == (n if torch.cuda.is_available() else 1)
        with pytest.raises(ValueError, match='cpu_threads'):
            setup_cpu_threads(Config(dict(cpu_threads=0)))
    finally:
        torch.set_num_threads(n)


def test_release_dataloader_workers_stops_persistent_workers():
    """tools/train.py and test.py stop the loops' persistent workers before exit (torch <= 2.11 joined each one
    for 5 s at exit); loops not built (dicts) or without workers are left alone."""
    from types import SimpleNamespace
    from attnzoo.tasks.runtime import release_dataloader_workers
    loader = torch.utils.data.DataLoader(torch.arange(8), batch_size=4, num_workers=2, persistent_workers=True)
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    workers = loader._iterator._workers
    assert all(w.is_alive() for w in workers)
    plain = torch.utils.data.DataLoader(torch.arange(4), batch_size=2)
    runner = SimpleNamespace(_train_loop=SimpleNamespace(dataloader=loader), _val_loop=dict(type='ValLoop'),
                             _test_loop=SimpleNamespace(dataloader=plain))
    release_dataloader_workers(runner)
    assert not any(w.is_alive() for w in workers) and loader._iterator is None
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # the loader still works (new workers)
    release_dataloader_workers(runner)


def test_mmengine_reads_runner_checkpoints_without_trust(tmp_path):
    """attnzoo.tasks registers its tensors-only loader (with mmengine's HistoryBuffer allowed) as mmengine's local
    reader; only trusted=True unpickles anything else."""
    import os
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader
    from attnzoo.tasks import register_checkpoint_loader
    from attnzoo.utils.checkpoint import CheckpointError
    path = tmp_path / 'ckpt.pth'
    buf = HistoryBuffer()
    buf.update(1.0)
    torch.save(dict(state_dict={'w': torch.ones(2)}, message_hub=dict(log=buf)), path)
    with pytest.raises(Exception):  # torch >= 2.6 weights_only default refuses the message hub
        torch.load(path)
    ckpt = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2)) and ckpt['message_hub']['log'].current() == 1.0
    torch.save(dict(state_dict={'w': torch.ones(2)}, code=os.getpid), tmp_path / 'code.pth')
    with pytest.raises(CheckpointError, match='--trust-checkpoint'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'code.pth'), map_location='cpu')
    register_checkpoint_loader(trusted=True)
    try:
        assert CheckpointLoader.load_checkpoint(str(tmp_path / 'code.pth'), map_location='cpu')['code'] is os.getpid
    finally:
        register_checkpoint_loader()


def test_finetune_init_from_a_pretrained_file_drops_only_the_head(tmp_path):
    """The 22k -> 1k recipe: load a checkpoint with another head size through timm's pretrained path."""
    torch.manual_seed(0)
    src = timm.create_model('dinat_mini', num_classes=7, **TINY_DINAT)
    path = tmp_path / 'src_in22k.pth'
    torch.save(src.state_dict(), path)
    cfg = Config.fromfile(str(CONFIGS / 'dinat_large.py'))
    cfg.merge_from_dict({'model.model_name': 'dinat_mini', 'model.model_kwargs.pretrained': True,
                         'model.model_kwargs.pretrained_cfg_overlay.file': str(path),
                         'model.model_kwargs.pretrained_cfg_overlay.num_classes': 7})
    cfg.model.model_kwargs.update(TINY_DINAT)
    model = MODELS.build(cfg.model)
    assert model.model.head.fc.out_features == 1000
    src_sd, dst_sd = src.state_dict(), model.model.state_dict()
    body = [k for k in src_sd if not k.startswith('head.fc')]
    assert body and all(torch.equal(src_sd[k], dst_sd[k]) for k in body)


# Registered classifiers that are not trained on ImageNet-1k from a config: ImageNet-22k pre-training models.
NO_IN1K_CONFIG = {'dinat_large_11x11'}


def test_every_registered_classifier_has_a_config():
    """Each attnzoo classification variant has configs/classification/<name>.py, and every config names a
    registered model."""

    families = ('nat', 'biformer', 'l2vit', 'favit', 'sparsifiner')
    registered = {n for fam in families for n in timm.list_models(module=fam)}
    configs = {p.stem for p in CONFIGS.glob('*.py') if not p.stem.startswith('_')}
    assert registered - NO_IN1K_CONFIG <= configs, sorted(registered - NO_IN1K_CONFIG - configs)
    for path in CONFIGS.glob('*.py'):
        cfg = Config.fromfile(str(path))
        assert timm.is_model(cfg.model.model_name), (path.name, cfg.model.model_name)


def test_randaugment_posterize_to_zero_bits_works_on_current_pillow(tmp_path):
    """The recipes' ``rand-m9-mstd0.5-inc1`` posterizes to 0 bits when the sampled magnitude clips at 10; Pillow >= 12
    raises on that, so the classification dataset (one idempotent call before it builds its transform) keeps the
    older Pillow result (a black image) for every posterize variant."""
    from timm.data import auto_augment
    ImageNetFolder(str(make_folder(tmp_path, n_train=1, n_val=1)), data_config=dict(input_size=(3, 16, 16)),
                   transform=dict(auto_augment='rand-m9-mstd0.5-inc1'))
    assert cls.allow_zero_bit_posterize() == cls._pillow_rejects_zero_bits()  # a second call changes nothing
    if not cls._pillow_rejects_zero_bits():
        pytest.skip('this Pillow posterizes to 0 bits itself')
    img = Image.fromarray((np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8))
    for name in ('Posterize', 'PosterizeIncreasing', 'PosterizeOriginal'):
        op = auto_augment.NAME_TO_OP[name]
        assert np.asarray(op(img, 0)).max() == 0
        assert np.array_equal(np.asarray(op(img, 4)), np.asarray(img) & 0xF0)
    # the increasing-level op at magnitude 10 (what mstd clipping reaches) through the real transform
    aug = auto_augment.AugmentOp('PosterizeIncreasing', prob=1.0, magnitude=10)
    assert np.asarray(aug(img)).max() == 0
