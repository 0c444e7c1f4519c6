# NAT / DiNAT / DiNAT_s / isotropic ImageNet-1k recipe (300 epochs from scratch).
# A variant file sets the model name (model + datasets) and its drop-path rate.
_base_ = ['./default_runtime.py', './datasets/imagenet.py', './schedules/nat_adamw_cosine_300e.py']
model = dict(
    type='TimmClassifier',
    model_name=None,
    num_classes=1000,
    model_kwargs=dict(drop_path_rate=0.2),
    # timm train.py defaults the repo used: mixup 0.8, cutmix 1.0, prob 1, switch 0.5, per batch;
    # label smoothing 0.1 goes into the mixed soft targets (SoftTargetCrossEntropy)
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'),
    smoothing=0.1,
)
