# DiNAT-Tiny, ImageNet-1k from scratch, 300 epochs (+10 cooldown); paper top-1 82.7.
_base_ = '../_base_/nat_in1k.py'
model = dict(model_name='dinat_tiny', model_kwargs=dict(drop_path_rate=0.2))
train_dataloader = dict(dataset=dict(model_name='dinat_tiny'))
val_dataloader = dict(dataset=dict(model_name='dinat_tiny'))
test_dataloader = dict(dataset=dict(model_name='dinat_tiny'))
