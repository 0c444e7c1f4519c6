# Semantic FPN, BiFormer-S, ADE20K 512 x 512, 80k (BiFormer's semantic-FPN recipe: batch 32 = 8 x 4, AdamW lr
# 2e-4, wd 1e-4, cosine with 1000-iter warm-up from 0.1; 8 regions per side with padding; drop-path 0.15).
_base_ = ['./_base_/upernet_ade20k_160k.py']
max_iters = 80000
model = dict(backbone=dict(model_name='biformer_small', dense_preset='ade20k',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.15)),
             decode_head='fpn', head_channels=128, aux_head=False)
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(optimizer=dict(lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=max_iters - 1000, eta_min=0.0, by_epoch=False, begin=1000, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
