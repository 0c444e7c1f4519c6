# Mask R-CNN + FPN, DiNAT_s-Tiny (the DiNAT_s family's smallest), COCO 3x; DiNAT_s detection dilations
# ((1,28) (1,14) (1,3,1,5,1,7) (1,3)), drop-path 0.2.
_base_ = ['./_base_/coco_instance_3x.py']
model = dict(backbone=dict(model_name='dinat_s_tiny', dense_preset='coco',
                           model_kwargs=dict(pretrained=True, drop_path_rate=0.2)))
