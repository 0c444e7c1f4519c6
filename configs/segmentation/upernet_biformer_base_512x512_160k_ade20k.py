# UPerNet, BiFormer-B (BiFormer's headline segmenter), ADE20K 512 x 512, 160k; 8 regions per side with padding.
_base_ = ['./_base_/upernet_ade20k_160k.py']
model = dict(backbone=dict(model_name='biformer_base', dense_preset='ade20k',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.4)))
