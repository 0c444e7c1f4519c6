# DiNAT-Mini, ImageNet-1k from scratch, 300 epochs (+10 cooldown); paper top-1 81.8.
_base_ = '../_base_/nat_in1k.py'
model = dict(model_name='dinat_mini', model_kwargs=dict(drop_path_rate=0.2))
train_dataloader = dict(dataset=dict(model_name='dinat_mini'))
val_dataloader = dict(dataset=dict(model_name='dinat_mini'))
test_dataloader = dict(dataset=dict(model_name='dinat_mini'))
