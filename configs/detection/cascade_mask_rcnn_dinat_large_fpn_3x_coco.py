# Cascade Mask R-CNN + FPN, DiNAT-Large (ImageNet-22k), COCO 3x: the DiNAT paper's headline detector.
# Official config: drop-path 0.6, AdamW lr 7.5e-5, no fp16; 22k checkpoint dinat_large_in22k_224.pth.
_base_ = ['./_base_/cascade.py']
model = dict(backbone=dict(model_name='dinat_large.in22k', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.6)))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=7.5e-5))
