# UPerNet, DiNAT-Tiny, ADE20K 512 x 512, 160k iterations (DiNAT paper: 48.8 mIoU single-scale with the official
# mmseg code). Backbone: ImageNet-1k dinat_tiny (timm pretrained=True) with the segmentation dilations
# (dense_preset='ade20k': (1,16,1) (1,4,1,8) (1,2,1,3,1,4)x3 (1,2,1,2,1)) and drop-path 0.3 (official config).
#   python tools/train.py configs/segmentation/upernet_dinat_tiny_512x512_160k_ade20k.py --data-root data/ade/ADEChallengeData2016
#   python tools/test.py configs/segmentation/upernet_dinat_tiny_512x512_160k_ade20k.py CHECKPOINT
# Sliding-window evaluation: --cfg-options model.test_mode=slide
_base_ = ['./_base_/upernet_ade20k_160k.py']
model = dict(backbone=dict(model_name='dinat_tiny', dense_preset='ade20k',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.3)))
