# NAT-Small, ImageNet-1k from scratch, 300 epochs (+10 cooldown); paper top-1 83.7.
_base_ = '../_base_/nat_in1k.py'
model = dict(model_name='nat_small', model_kwargs=dict(drop_path_rate=0.3))
train_dataloader = dict(dataset=dict(model_name='nat_small'))
val_dataloader = dict(dataset=dict(model_name='nat_small'))
test_dataloader = dict(dataset=dict(model_name='nat_small'))
