# Mask R-CNN + FPN, DiNAT-Tiny, COCO 3x (DiNAT paper: 46.0 box AP / 41.4 mask AP with the official mmdet code).
#   python tools/train.py configs/detection/mask_rcnn_dinat_tiny_fpn_3x_coco.py --data-root data/coco
#   python tools/test.py configs/detection/mask_rcnn_dinat_tiny_fpn_3x_coco.py work_dirs/.../best_*.pth
# Backbone: ImageNet-1k dinat_tiny (timm pretrained=True) with the detection dilations (dense_preset='coco':
# (1,28,1) (1,7,1,14) (1,3,1,5,1,7)x3 (1,3,1,3,1)) and drop-path 0.2 (official config).
_base_ = ['./_base_/coco_instance_3x.py']
model = dict(backbone=dict(model_name='dinat_tiny', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2)))
