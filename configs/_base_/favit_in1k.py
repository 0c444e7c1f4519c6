# FaViT ImageNet-1k recipe (official FaViT/classification/main.py, the DeiT/PVT codebase): AdamW lr 5e-4 x total
# batch / 512 (128/GPU x 8 GPUs -> 1e-3), wd 0.05, eps 1e-8, native AMP; per-epoch cosine (timm scheduler) from the
# peak to 1e-5 after a linear warmup from 1e-6 over 5 epochs, 300 epochs + 10 cooldown epochs at 1e-5;
# RandAugment m9, mixup 0.8 / cutmix 1.0 (prob 1, switch 0.5, per batch), label smoothing 0.1, random erasing 0.25,
# no EMA. A variant file sets the model name, its drop-path rate and grad clipping (configs/favit/favit_b*.py).
_base_ = ['./default_runtime.py', './datasets/imagenet.py', './models/timm_classifier_in1k.py']
favit_lr = 1e-3
favit_warmup_lr = 1e-6
favit_min_lr = 1e-5
favit_epochs = 300
favit_warmup_epochs = 5
favit_cooldown_epochs = 10
train_dataloader = dict(dataset=dict(transform=dict(interpolation='bicubic')))
optim_wrapper = dict(
    type='AutoAmpOptimWrapper',
    constructor='TimmOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=favit_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=favit_warmup_lr / favit_lr, end_factor=1.0, by_epoch=True, begin=0,
         end=favit_warmup_epochs),
    dict(type='CosineAnnealingLR', T_max=favit_epochs - favit_warmup_epochs, eta_min_ratio=favit_min_lr / favit_lr,
         by_epoch=True, begin=favit_warmup_epochs, end=favit_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=favit_epochs + favit_cooldown_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# lr = 5e-4 * total_batch / 512
auto_scale_lr = dict(base_batch_size=1024, enable=True)
