# DiNAT-L / DiNAT_s-L ImageNet-22k -> 1k fine-tune recipe: 30 epochs, lr 5e-5, no mixup/cutmix
# (label smoothing 0.1, RandAugment and RandomErasing stay: timm train.py defaults).
# Start from the released ImageNet-22k weights (each variant file names them), e.g.
#   --cfg-options model.model_kwargs.pretrained=True \
#       model.model_kwargs.pretrained_cfg_overlay.file=dinat_large_in22k_224.pth \
#       model.model_kwargs.pretrained_cfg_overlay.num_classes=21841
# (timm then loads everything but the 21841-way head, which is re-initialised for 1000 classes).
_base_ = ['./default_runtime.py', './datasets/imagenet.py', './schedules/nat_finetune_30e.py']
model = dict(
    type='TimmClassifier',
    model_name=None,
    num_classes=1000,
    model_kwargs=dict(drop_path_rate=0.35),
    mixup=None,
    smoothing=0.1,
)
train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = dict(batch_size=64)
