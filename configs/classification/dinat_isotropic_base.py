# DiNAT-iso-Base, ImageNet-1k from scratch, 300 epochs (+10 cooldown), 50 warmup epochs, EMA 0.9998; paper top-1 82.1.
_base_ = '../_base_/nat_in1k.py'
model = dict(model_name='dinat_isotropic_base', model_kwargs=dict(drop_path_rate=0.4))
train_dataloader = dict(dataset=dict(model_name='dinat_isotropic_base'))
val_dataloader = dict(dataset=dict(model_name='dinat_isotropic_base'))
test_dataloader = dict(dataset=dict(model_name='dinat_isotropic_base'))
# 50 warmup epochs instead of 20, cosine over the remaining 250
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, end_factor=1.0, by_epoch=True, begin=0, end=50,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=250, eta_min_ratio=5e-3, by_epoch=True, begin=50, end=300,
         convert_to_iter_based=True),
]
# model EMA (timm ModelEmaV2 decay 0.9998 per step = mmengine momentum 2e-4); val/checkpoints use EMA weights
custom_hooks = [dict(type='ClsSummaryHook'),
                dict(type='EMAHook', momentum=2e-4, update_buffers=True, priority='ABOVE_NORMAL')]
