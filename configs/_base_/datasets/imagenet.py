# ImageNet-1k folder (data_root/{train,val}/<wnid>/*.JPEG) with timm's transforms.
# Input size, mean/std, eval interpolation and crop_pct come from the model's pretrained_cfg
# (set `model_name` in each dataset dict); the training augmentation is timm train.py's /
# the NAT repo's: RandomResizedCrop(0.08-1), hflip, RandAugment rand-m9-mstd0.5-inc1,
# random interpolation, RandomErasing p=0.25 (pixel mode).
# A file that cannot be decoded (empty, not an image, truncated) is left out of training and of the accuracy,
# and named in a warning (ImageNetFolder's on_bad_image='skip'); on_bad_image='error' makes it an error naming it.
imagenet_root = 'data/imagenet'
imagenet_train_transform = dict(
    scale=(0.08, 1.0), ratio=(3. / 4., 4. / 3.), hflip=0.5, color_jitter=0.4,
    auto_augment='rand-m9-mstd0.5-inc1', interpolation='random',
    re_prob=0.25, re_mode='pixel', re_count=1)
train_dataloader = dict(
    batch_size=128,  # per GPU; the papers used 8 GPUs -> 1024
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,  # mixup needs even batches; timm's loader drops the last one too
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNetFolder', data_root=imagenet_root, split='train', model_name=None,
                 transform=imagenet_train_transform),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageNetFolder', data_root=imagenet_root, split='val', model_name=None),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='ClsAccuracy', topk=(1, 5))
test_evaluator = val_evaluator
