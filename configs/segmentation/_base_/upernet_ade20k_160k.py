# UPerNet (+ auxiliary FCN head, weight 0.4) on ADE20K, 160k iterations at 512 x 512: the recipe of the DiNAT /
# NAT / Swin / L2ViT / BiFormer segmentation configs. Batch 16 (8 GPUs x 2); AdamW lr 6e-5, betas (0.9, 0.999),
# wd 0.01 without decay on rpb / norms; linear warm-up 1500 iters from 1e-6, then poly (power 1) to 0.
# Data: ADEChallengeData2016 layout (images/{training,validation}/*.jpg, annotations/.../*.png), reduce_zero_label
# (150 classes, "other" ignored), random rescale of (2048, 512) by 0.5-2.0, 512 x 512 crop (cat_max_ratio 0.75),
# flip, photometric distortion; evaluation: short side 512 (long <= 2048), whole-image inference, mIoU.
_base_ = ['../../_base_/default_runtime.py']

data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
num_classes = 150
model = dict(
    type='EncoderDecoderSegmentor',
    backbone=dict(model_name='dinat_tiny', dense_preset='ade20k', out_indices=(0, 1, 2, 3),
                  model_kwargs=dict(pretrained=True, drop_path_rate=0.3)),
    num_classes=num_classes,
    decode_head='uper',
    head_channels=512,
    aux_head=True,
    aux_in_index=2,
    aux_channels=256,
    aux_weight=0.4,
    ignore_index=255,
    test_mode='whole',
    crop_size=crop_size,
    stride=(341, 341),
)
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='seg_collate'),
    dataset=dict(type='SegFolderDataset', data_root=data_root, split='training', reduce_zero_label=True,
                 scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=crop_size, cat_max_ratio=0.75,
                 flip_prob=0.5, photometric=True),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='seg_collate'),
    dataset=dict(type='SegFolderDataset', data_root=data_root, split='validation', reduce_zero_label=True,
                 scale=(2048, 512)),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', num_classes=num_classes, ignore_index=255)
test_evaluator = val_evaluator

max_iters = 160000
optim_wrapper = dict(
    type='AutoAmpOptimWrapper',  # fp16 + loss scaling on CUDA (the papers' fp16), bf16 on CPU
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'rpb': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=16000)
val_cfg = dict()
test_cfg = dict()
sync_bn = 'torch'  # the heads' BN becomes SyncBN under DDP (mmseg's SyncBN)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=16000, max_keep_ckpts=3,
                    save_best='mIoU', rule='greater'))
custom_hooks = [dict(type='DenseSummaryHook', keys=('mIoU', 'mAcc', 'aAcc'))]
log_processor = dict(by_epoch=False)
