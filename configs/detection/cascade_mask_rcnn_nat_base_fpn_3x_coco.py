# Cascade Mask R-CNN + FPN, NAT-Base, COCO 3x: the NAT paper's largest detector (drop-path 0.5 assumed).
_base_ = ['./_base_/cascade.py']
model = dict(backbone=dict(model_name='nat_base', dense_preset=None,
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.5)))
