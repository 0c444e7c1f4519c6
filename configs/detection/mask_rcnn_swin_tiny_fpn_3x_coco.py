# Mask R-CNN + FPN, timm's Swin-T (ImageNet-1k), COCO 3x: the baseline of the DiNAT / NAT tables (46.0 box AP in
# the Swin paper), through the same detector code as the attnzoo backbones (timm's NHWC features are permuted).
# strict_img_size=False lets timm's Swin take any input size (the batch is padded to 32; windows pad inside).
_base_ = ['./_base_/coco_instance_3x.py']
model = dict(backbone=dict(model_name='swin_tiny_patch4_window7_224', dense_preset=None,
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2, strict_img_size=False)))
