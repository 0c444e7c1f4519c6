# NAT / DiNAT / DiNAT_s / isotropic ImageNet-1k recipe (300 epochs from scratch).
# A variant file sets the model name (model + datasets) and its drop-path rate.
_base_ = ['./default_runtime.py', './datasets/imagenet.py', './models/timm_classifier_in1k.py',
          './schedules/nat_adamw_cosine_300e.py']
model = dict(model_kwargs=dict(drop_path_rate=0.2))
