# FaViT-B3, ImageNet-1k from scratch, 300 epochs (+10 cooldown); README top-1 83.4 (no weights released).
# Official configs/favit/favit_b3.py: drop_path 0.3, clip_grad 1.0.
_base_ = '../_base_/favit_in1k.py'
model = dict(model_name='favit_b3', model_kwargs=dict(drop_path_rate=0.3))
train_dataloader = dict(dataset=dict(model_name='favit_b3'))
val_dataloader = dict(dataset=dict(model_name='favit_b3'))
test_dataloader = dict(dataset=dict(model_name='favit_b3'))
optim_wrapper = dict(clip_grad=dict(max_norm=1.0, norm_type=2))
