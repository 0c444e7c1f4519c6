# Cascade Mask R-CNN + FPN, DiNAT_s-Large (ImageNet-22k), COCO 3x: DiNAT_s's headline detector (drop-path 0.6
# and lr 7.5e-5 as DiNAT-L).
_base_ = ['./_base_/cascade.py']
model = dict(backbone=dict(model_name='dinat_s_large.in22k', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.6)))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=7.5e-5))
