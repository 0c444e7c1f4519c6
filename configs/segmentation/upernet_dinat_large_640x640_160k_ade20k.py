# UPerNet, DiNAT-Large (ImageNet-22k), ADE20K 640 x 640, 160k: the DiNAT paper's headline UPerNet. The official
# 640 dilations ((1,20,1) (1,5,1,10) (1,2,1,3,1,4,1,5,...) (1,2,1,2,1)) are given explicitly; scale (2560, 640).
_base_ = ['./_base_/upernet_ade20k_160k.py']
crop_size = (640, 640)
model = dict(
    backbone=dict(model_name='dinat_large.in22k', dense_preset=None, model_kwargs=dict(
        pretrained=True, drop_path_rate=0.35,
        dilations=((1, 20, 1), (1, 5, 1, 10), (1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5),
                   (1, 2, 1, 2, 1)))),
    crop_size=crop_size)
train_dataloader = dict(dataset=dict(scale=(2560, 640), crop_size=crop_size))
val_dataloader = dict(dataset=dict(scale=(2560, 640)))
test_dataloader = val_dataloader
