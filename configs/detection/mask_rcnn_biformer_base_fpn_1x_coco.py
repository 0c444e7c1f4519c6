# Mask R-CNN + FPN, BiFormer-B (BiFormer's headline detector), COCO 1x; 16 regions per side with padding.
_base_ = ['./_base_/coco_instance_1x.py']
model = dict(backbone=dict(model_name='biformer_base', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.3)))
