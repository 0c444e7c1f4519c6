# DiNAT_s-Large 384: ImageNet-22k -> 1k fine-tune, 30 epochs; paper top-1 87.4. Recipe: dinat_s_large_384.yml.
# Initial weights: dinat_s_large.in22k (imagenet22k/dinat_s_large_in22k_224.pth); see ../_base_/nat_in1k_finetune.py for how to load them.
_base_ = '../_base_/nat_in1k_finetune.py'
model = dict(model_name='dinat_s_large_384', model_kwargs=dict(drop_path_rate=0.35))
optim_wrapper = dict(optimizer=dict(weight_decay=1e-05))
train_dataloader = dict(dataset=dict(model_name='dinat_s_large_384', data_config=dict(input_size=(3, 384, 384), crop_pct=1.0)))
val_dataloader = dict(dataset=dict(model_name='dinat_s_large_384', data_config=dict(input_size=(3, 384, 384), crop_pct=1.0)))
test_dataloader = dict(dataset=dict(model_name='dinat_s_large_384', data_config=dict(input_size=(3, 384, 384), crop_pct=1.0)))
