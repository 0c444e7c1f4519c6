# NAT / DiNAT ImageNet-1k schedule (classification/configs/*.yml of the official repo, on timm's
# train.py): AdamW lr 1e-3 at a total batch of 1024, wd 0.05, eps 1e-8, grad-norm clip 5, native AMP;
# per-iteration schedule: linear warmup from 1e-6 over 20 epochs, cosine to 5e-6 at epoch 300,
# then timm's 10 cooldown epochs at 5e-6 (so 310 epochs are run, as timm's train.py does).
nat_lr = 1e-3
nat_warmup_lr = 1e-6
nat_min_lr = 5e-6
nat_epochs = 300
nat_warmup_epochs = 20
nat_cooldown_epochs = 10
optim_wrapper = dict(
    type='AutoAmpOptimWrapper',  # fp16 + loss scaling on CUDA, bf16 on CPU
    constructor='TimmOptimWrapperConstructor',  # timm create_optimizer_v2: no decay on 1-d / no_weight_decay()
    optimizer=dict(type='AdamW', lr=nat_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=5.0, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=nat_warmup_lr / nat_lr, end_factor=1.0,
         by_epoch=True, begin=0, end=nat_warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=nat_epochs - nat_warmup_epochs, eta_min_ratio=nat_min_lr / nat_lr,
         by_epoch=True, begin=nat_warmup_epochs, end=nat_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=nat_epochs + nat_cooldown_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# lr 1e-3 is for 8 GPUs x 128; other world sizes / batch sizes scale it linearly.
auto_scale_lr = dict(base_batch_size=1024, enable=True)
