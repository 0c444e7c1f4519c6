# Embedded segmentation demo: a synthetic ADE20K-layout set (shapes drawn with PIL, label 0 = "other" ignored by
# reduce_zero_label; written to data/tiny_seg on first use) and UPerNet on a tiny DiNAT through the same
# SegFolderDataset / EncoderDecoderSegmentor / IoUMetric path as the ADE20K configs. CPU, a few minutes:
#   python tools/train.py configs/segmentation/demo_tiny_shapes_upernet.py
_base_ = ['./_base_/upernet_ade20k_160k.py']
data_root = 'data/tiny_seg'
tiny = dict(type='tiny_shapes', num_train=16, num_val=8, size=(96, 80), seed=0, val_equals_train=True)
crop_size = (64, 64)
num_classes = 3
model = dict(
    backbone=dict(model_name='dinat_mini', dense_preset=None,
                  model_kwargs=dict(_delete_=True, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                                    kernel_size=3, dilations=((2,), (1,), (1,), (1,)), drop_path_rate=0.0)),
    num_classes=num_classes, head_channels=32, aux_channels=16, crop_size=crop_size, stride=(48, 48),
    image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, scale=(96, 80), ratio_range=(0.75, 1.25),
                                     crop_size=crop_size, prepare=tiny))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, scale=(96, 80), prepare=tiny))
test_dataloader = val_dataloader
val_evaluator = dict(num_classes=num_classes)
test_evaluator = val_evaluator
max_iters = 200
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=2e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=10, end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=100)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=100, max_keep_ckpts=1))
cpu_threads = 1
