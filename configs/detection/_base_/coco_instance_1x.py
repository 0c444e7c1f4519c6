# 1x (12 epochs, lr x0.1 at 8 and 11) COCO schedule: BiFormer / FaViT / L2ViT Mask R-CNN 1x (AdamW 1e-4, wd 0.05).
_base_ = ['./coco_instance_3x.py']
max_epochs = 12
model = dict(min_size=800)  # 1x configs train at the single scale 800 x 1333
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[8, 11], gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
