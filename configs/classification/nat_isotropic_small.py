# NAT-iso-Small, ImageNet-1k from scratch, 300 epochs (+10 cooldown); paper top-1 80.0.
_base_ = '../_base_/nat_in1k.py'
model = dict(model_name='nat_isotropic_small', model_kwargs=dict(drop_path_rate=0.1))
train_dataloader = dict(dataset=dict(model_name='nat_isotropic_small'))
val_dataloader = dict(dataset=dict(model_name='nat_isotropic_small'))
test_dataloader = dict(dataset=dict(model_name='nat_isotropic_small'))
