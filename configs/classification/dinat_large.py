# DiNAT-Large: ImageNet-22k -> 1k fine-tune, 30 epochs; paper top-1 86.6. Recipe: dinat_large.yml.
# Initial weights: dinat_large.in22k (imagenet22k/dinat_large_in22k_224.pth); see ../_base_/nat_in1k_finetune.py for how to load them.
_base_ = '../_base_/nat_in1k_finetune.py'
model = dict(model_name='dinat_large', model_kwargs=dict(drop_path_rate=0.35))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0001))
train_dataloader = dict(dataset=dict(model_name='dinat_large'))
val_dataloader = dict(dataset=dict(model_name='dinat_large'))
test_dataloader = dict(dataset=dict(model_name='dinat_large'))
