# Sparsifiner-S (DeiT-S, keep rate 0.25 -> 50 of 197 keys), phase 1 of the official default recipe
# (experiments-results-analysis/experiments/sparsifiner_default_config.yaml, 'attn_recon', 5 epochs):
# only the connectivity predictors train (AdamW, cosine 3e-4 -> 2e-4, 3 warm-up epochs, wd 0.05),
# distilled onto the dense DeiT-S teacher's attention (0.01 x mean over layers of the summed squared
# error); backbone dense and frozen, started from the public DeiT-S weights (predictor fresh).
# Official: batch 168 x 8 GPUs = 1344, EMA 0.9999, mixup 0.8 / cutmix 1.0, RandAugment, label smoothing 0.1,
# random erase 0.25, no AMP. Then run sparsifiner_deit_small_phase2.py.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/imagenet.py']
model = dict(
    type='SparsifinerClassifier',
    model_name='sparsifiner_deit_small',
    num_classes=1000,
    phase='recon',
    init_checkpoint=None,
    model_kwargs=dict(keep_rate=0.25, pretrained=True, drop_path_rate=0.0),  # tag deit_init: DeiT-S weights
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'),
    smoothing=0.1,
)
train_dataloader = dict(batch_size=168, dataset=dict(model_name='sparsifiner_deit_small'))
val_dataloader = dict(dataset=dict(model_name='sparsifiner_deit_small'))
test_dataloader = dict(dataset=dict(model_name='sparsifiner_deit_small'))
sparsifiner_epochs = 5
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TimmOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=3e-4, weight_decay=0.05),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=3, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=sparsifiner_epochs - 3, eta_min=2e-4, by_epoch=True, begin=3,
         end=sparsifiner_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=sparsifiner_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1344)
custom_hooks = [dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=1e-4),
                dict(type='ClsSummaryHook')]
