# UPerNet, DiNAT-Mini (the family's smallest), ADE20K 512 x 512, 160k; segmentation dilations, drop-path 0.2.
_base_ = ['./_base_/upernet_ade20k_160k.py']
model = dict(backbone=dict(model_name='dinat_mini', dense_preset='ade20k',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2)))
