# Mask R-CNN + FPN, DiNAT-Mini (the family's smallest), COCO 3x; detection dilations, drop-path 0.2.
_base_ = ['./_base_/coco_instance_3x.py']
model = dict(backbone=dict(model_name='dinat_mini', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2)))
