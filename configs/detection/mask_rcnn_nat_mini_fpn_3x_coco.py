# Mask R-CNN + FPN, NAT-Mini (the NAT family's smallest), COCO 3x; no dilation (NAT), drop-path 0.2.
_base_ = ['./_base_/coco_instance_3x.py']
model = dict(backbone=dict(model_name='nat_mini', dense_preset=None,
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2)))
