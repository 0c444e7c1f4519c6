# UPerNet, NAT-Mini, ADE20K 512 x 512, 160k; drop-path 0.2.
_base_ = ['./_base_/upernet_ade20k_160k.py']
model = dict(backbone=dict(model_name='nat_mini', dense_preset=None,
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2)))
