# Embedded detection demo: a synthetic COCO set (squares / circles / triangles drawn with PIL, boxes + polygon
# masks; written to data/tiny_coco on first use) and Mask R-CNN on a tiny DiNAT, through the same
# CocoDetDataset / TorchvisionDetector / CocoMetric path as the COCO configs. CPU, a few minutes:
#   python tools/train.py configs/detection/demo_tiny_shapes_mask_rcnn.py
_base_ = ['./_base_/coco_instance_3x.py']
data_root = 'data/tiny_coco'
tiny = dict(type='tiny_shapes', num_train=32, num_val=32, size=(160, 128), seed=0, val_equals_train=True)
model = dict(
    _delete_=True, type='TorchvisionDetector', detector='mask_rcnn', num_classes=3,
    backbone=dict(model_name='dinat_mini', dense_preset=None,
                  model_kwargs=dict(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), kernel_size=3,
                                    dilations=((2,), (1,), (1, 2), (1,)), drop_path_rate=0.0)),
    fpn_channels=64, min_size=128, max_size=160, image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25),
    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=100, box_batch_size_per_image=64, box_detections_per_img=20)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, ann_file='annotations/instances_train.json',
                                     img_prefix='train', prepare=tiny))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, ann_file='annotations/instances_val.json',
                                   img_prefix='val', prepare=tiny))
test_dataloader = val_dataloader
max_epochs = 30
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3, weight_decay=0.05), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[24], gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=10)
default_hooks = dict(logger=dict(interval=8), checkpoint=dict(interval=10, max_keep_ckpts=1))
cpu_threads = 1
