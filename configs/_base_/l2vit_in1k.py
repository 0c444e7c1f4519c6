# L²ViT ImageNet-1k recipe (official README + classification/main.py defaults, ConvNeXt codebase):
# AdamW lr 4e-3 at a total batch of 4096 (128/GPU x 8 GPUs x update_freq 4), wd 0.05, eps 1e-8, betas (0.9, 0.999),
# no grad clipping, fp32 (--use_amp false); per-iteration cosine from the peak to min_lr 1e-6 after a linear warmup
# from 0 over 20 epochs, 300 epochs; RandAugment m9, mixup 0.8 / cutmix 1.0 (prob 1, switch 0.5, per batch), label
# smoothing 0.1, random erasing 0.25, train interpolation bicubic; model EMA 0.9999 evaluated (--model_ema_eval).
# A variant file sets the model name and its drop-path rate.
_base_ = ['./default_runtime.py', './datasets/imagenet.py', './models/timm_classifier_in1k.py']
l2vit_lr = 4e-3
l2vit_min_lr = 1e-6
l2vit_epochs = 300
l2vit_warmup_epochs = 20
train_dataloader = dict(
    dataset=dict(transform=dict(interpolation='bicubic')))  # main.py --train_interpolation bicubic
optim_wrapper = dict(
    type='OptimWrapper',  # fp32, as the released models were trained
    constructor='TimmOptimWrapperConstructor',  # no decay on 1-d params (the [heads,1,1] temperatures are decayed)
    optimizer=dict(type='AdamW', lr=l2vit_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    accumulative_counts=4,  # update_freq 4: 4 x 8 GPUs x 128 = 4096 per step
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, end_factor=1.0, by_epoch=True, begin=0, end=l2vit_warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=l2vit_epochs - l2vit_warmup_epochs, eta_min_ratio=l2vit_min_lr / l2vit_lr,
         by_epoch=True, begin=l2vit_warmup_epochs, end=l2vit_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=l2vit_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# EMA 0.9999 per optimizer step (mmengine momentum 1e-4); validation and checkpoints use the EMA weights
custom_hooks = [dict(type='ClsSummaryHook'),
                dict(type='EMAHook', momentum=1e-4, update_buffers=True, priority='ABOVE_NORMAL')]
# lr 4e-3 is for a total batch of 4096 (including the 4 accumulation steps)
auto_scale_lr = dict(base_batch_size=1024, enable=True)
