# Cascade Mask R-CNN (DiNAT / NAT main tables): 3 stages at IoU 0.5 / 0.6 / 0.7, 4conv1fc box heads with BN
# (SyncBN under DDP with `sync_bn='torch'`), GIoU loss x10, stage weights 1 / 0.5 / 0.25.
_base_ = ['./coco_instance_3x.py']
model = dict(detector='cascade_mask_rcnn', box_head='4conv1fc', box_head_norm='bn', cascade_box_loss='giou')
sync_bn = 'torch'
