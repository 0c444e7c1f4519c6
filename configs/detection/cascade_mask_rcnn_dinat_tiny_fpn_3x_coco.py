# Cascade Mask R-CNN + FPN, DiNAT-Tiny, COCO 3x (official config: drop-path 0.3).
_base_ = ['./_base_/cascade.py']
model = dict(backbone=dict(model_name='dinat_tiny', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.3)))
