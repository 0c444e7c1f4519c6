# The model of every ImageNet-1k from-scratch recipe: a timm model (the variant file names it and sets its
# drop-path rate) under the TimmClassifier task, with the regularisation of timm's / DeiT's train.py that all the
# papers kept: mixup 0.8 / cutmix 1.0 (prob 1, switch 0.5, per batch); label smoothing 0.1 goes into the mixed
# soft targets (SoftTargetCrossEntropy).
model = dict(
    type='TimmClassifier',
    model_name=None,
    num_classes=1000,
    model_kwargs=dict(drop_path_rate=0.1),
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'),
    smoothing=0.1,
)
