# BiFormer ImageNet-1k recipe (official main.py / configs/train_args.yaml, DeiT-style, 300 epochs from scratch):
# AdamW lr 5e-4 per 512 images (linear scaling: 8 GPUs x 128 -> 1e-3; BiFormer-S was trained on 2x8 GPUs, 2e-3),
# wd 0.05, eps 1e-8, no gradient clipping, AMP; per-iteration schedule: linear warmup from 1e-6 over 5 epochs,
# cosine to 1e-5 at epoch 300, then timm's 10 cooldown epochs at 1e-5; model EMA 0.99996 (on by default);
# RandAugment rand-m9-mstd0.5-inc1, RandomErasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1.
# Not reproduced: repeated augmentation (on by default in main.py; the mmengine DefaultSampler has none).
# A variant file sets the model name (model + datasets) and its drop-path rate.
_base_ = ['./default_runtime.py', './datasets/imagenet.py', './models/timm_classifier_in1k.py']
biformer_lr = 5e-4 * 1024 / 512  # the 5e-4 base at the 8 x 128 batch below
biformer_warmup_lr = 1e-6
biformer_min_lr = 1e-5
biformer_epochs = 300
biformer_warmup_epochs = 5
biformer_cooldown_epochs = 10
optim_wrapper = dict(
    type='AutoAmpOptimWrapper',
    constructor='TimmOptimWrapperConstructor',  # no weight decay on 1-d params (timm create_optimizer_v2)
    optimizer=dict(type='AdamW', lr=biformer_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=biformer_warmup_lr / biformer_lr, end_factor=1.0,
         by_epoch=True, begin=0, end=biformer_warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=biformer_epochs - biformer_warmup_epochs,
         eta_min_ratio=biformer_min_lr / biformer_lr, by_epoch=True, begin=biformer_warmup_epochs,
         end=biformer_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=biformer_epochs + biformer_cooldown_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# lr scales linearly with the total batch (official: args.lr * batch * world_size / 512)
auto_scale_lr = dict(base_batch_size=1024, enable=True)
# model EMA (timm ModelEma decay 0.99996 per step = mmengine momentum 4e-5); val/checkpoints use EMA weights
custom_hooks = [dict(type='ClsSummaryHook'),
                dict(type='EMAHook', momentum=4e-5, update_buffers=True, priority='ABOVE_NORMAL')]
