# Mask R-CNN / Cascade Mask R-CNN 3x on COCO (instances_{train,val}2017), the recipe of the DiNAT / NAT / Swin
# detection configs: AdamW lr 1e-4 (total batch 16 = 8 GPUs x 2), wd 0.05 without decay on rpb / norms,
# linear warm-up 1000 iters, lr x0.1 at epochs 27 and 33 of 36; multi-scale training (short side 480-800,
# long side <= 1333) + horizontal flip, evaluation at 800 x 1333; COCO bbox + segm AP (pycocotools).
# Differences from the papers' mmdet pipeline: torchvision's heads and losses (smooth-L1 box loss, RPN 2000/1000
# proposals), one random scale per batch instead of per image, no DETR-style random-crop policy.
_base_ = ['../../_base_/default_runtime.py']

data_root = 'data/coco'
num_classes = 80
model = dict(
    type='TorchvisionDetector',
    detector='mask_rcnn',
    num_classes=num_classes,
    backbone=dict(model_name='dinat_tiny', dense_preset='coco', out_indices=(0, 1, 2, 3),
                  model_kwargs=dict(pretrained=True, drop_path_rate=0.2)),
    fpn_channels=256,
    min_size=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
    max_size=1333,
    size_divisible=32,
)
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='det_collate'),
    dataset=dict(type='CocoDetDataset', data_root=data_root, ann_file='annotations/instances_train2017.json',
                 img_prefix='train2017', with_mask=True, flip_prob=0.5, filter_empty_gt=True),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='det_collate'),
    dataset=dict(type='CocoDetDataset', data_root=data_root, ann_file='annotations/instances_val2017.json',
                 img_prefix='val2017', with_mask=True),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', metric=('bbox', 'segm'))
test_evaluator = val_evaluator

max_epochs = 36
optim_wrapper = dict(
    type='AutoAmpOptimWrapper',  # fp16 + loss scaling on CUDA (the papers' fp16), bf16 on CPU
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[27, 33], gamma=0.1),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(checkpoint=dict(save_best='coco/bbox_mAP', rule='greater'))
custom_hooks = [dict(type='DenseSummaryHook', keys=('bbox_mAP', 'bbox_mAP_50', 'segm_mAP'))]
log_processor = dict(by_epoch=True)
