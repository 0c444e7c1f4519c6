# Embedded default demo: scikit-learn's 1,797 handwritten digits (8x8, shipped with the package,
# no download) are written once as an ImageNet-style folder (digits_root/{train,val}/<digit>/*.png,
# 32 px, stratified deterministic 80/20 split) and a small DiNAT is trained on them through the
# same ImageNetFolder / timm-transform / Runner path as the ImageNet configs.
#   python tools/train.py configs/classification/demo_digits.py
# Finishes in a few minutes on 2 CPU cores; prints "Final: top1=.. top5=.. ..." (>= 90 % top-1).
_base_ = ['../_base_/default_runtime.py']

digits_root = 'data/digits'
digits_size = 32
digits_model = dict(
    type='TimmClassifier',
    model_name='dinat_mini',
    num_classes=10,
    # a 4-stage DiNAT, 8x8 -> 1x1 tokens at 32 px; 3x3 neighborhoods, dilation 2 on stage 1
    model_kwargs=dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), kernel_size=3,
                      dilations=((2,), (1,), (1, 1), (1,)), mlp_ratio=2.0, drop_path_rate=0.0),
    mixup=None,
    smoothing=0.1,
)
model = digits_model
digits_data_config = dict(input_size=(3, digits_size, digits_size), interpolation='bicubic',
                          mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
# digits are not flip-invariant and already centred: mild crops, no flips / colour / RandAugment
digits_train_transform = dict(scale=(0.6, 1.0), ratio=(0.85, 1.15), hflip=0.0, color_jitter=None,
                              auto_augment=None, re_prob=0.0)
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNetFolder', data_root=digits_root, split='train',
                 prepare=dict(type='sklearn_digits', size=digits_size, val_fraction=0.2, seed=0),
                 data_config=digits_data_config, transform=digits_train_transform),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNetFolder', data_root=digits_root, split='val',
                 prepare=dict(type='sklearn_digits', size=digits_size, val_fraction=0.2, seed=0),
                 data_config=digits_data_config),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='ClsAccuracy', topk=(1, 5))
test_evaluator = val_evaluator

digits_epochs = 10
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TimmOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=digits_epochs - 1, eta_min_ratio=0.01, by_epoch=True, begin=1,
         end=digits_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=digits_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(max_keep_ckpts=1))
# one intra-op thread: as fast for this tiny model and robust when other jobs share the CPU
# (tools/train.py applies it on CPU unless OMP_NUM_THREADS is set)
cpu_threads = 1
