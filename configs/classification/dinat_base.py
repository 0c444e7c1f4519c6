# DiNAT-Base, ImageNet-1k from scratch, 300 epochs (+10 cooldown); paper top-1 84.4.
_base_ = '../_base_/nat_in1k.py'
model = dict(model_name='dinat_base', model_kwargs=dict(drop_path_rate=0.5))
train_dataloader = dict(dataset=dict(model_name='dinat_base'))
val_dataloader = dict(dataset=dict(model_name='dinat_base'))
test_dataloader = dict(dataset=dict(model_name='dinat_base'))
