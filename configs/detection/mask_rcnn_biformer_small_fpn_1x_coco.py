# Mask R-CNN + FPN, BiFormer-S (the smallest in the BiFormer detection table), COCO 1x; 16 regions per side
# with padding (dense_preset='coco': num_regions=16, auto_pad=True), drop-path 0.2 (assumed).
_base_ = ['./_base_/coco_instance_1x.py']
model = dict(backbone=dict(model_name='biformer_small', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2)))
