# L²ViT-B 384 px (window 12), ImageNet-22k -> 1k fine-tune, 30 epochs; README top-1 87.0.
# Official README: drop path 0.2, lr 4e-5 at batch 1024 (64/GPU x 8 x update_freq 2), warmup 5 epochs from 4e-8,
# min_lr 4e-7, wd 1e-8, EMA 0.9999 evaluated, fp32. Start from the 22k weights, e.g.
#   --cfg-options model.model_kwargs.pretrained=True \
#       model.model_kwargs.pretrained_cfg_overlay.file=L2ViT-Base-22k-pretrain-checkpoint-best.pth \
#       model.model_kwargs.pretrained_cfg_overlay.num_classes=21841
_base_ = '../_base_/l2vit_in1k.py'
model = dict(model_name='l2vit_base_384', model_kwargs=dict(drop_path_rate=0.2))
train_dataloader = dict(batch_size=64, dataset=dict(model_name='l2vit_base_384'))
val_dataloader = dict(batch_size=64, dataset=dict(model_name='l2vit_base_384'))
test_dataloader = dict(batch_size=64, dataset=dict(model_name='l2vit_base_384'))
optim_wrapper = dict(optimizer=dict(lr=4e-5, weight_decay=1e-8), accumulative_counts=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, end_factor=1.0, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=25, eta_min_ratio=1e-2, by_epoch=True, begin=5, end=30,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30)
