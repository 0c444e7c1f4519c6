# FaViT-B0, ImageNet-1k from scratch, 300 epochs (+10 cooldown); README top-1 71.5 (no weights released).
# Official configs/favit/favit_b0.py: drop_path 0.1, clip_grad None.
_base_ = '../_base_/favit_in1k.py'
model = dict(model_name='favit_b0', model_kwargs=dict(drop_path_rate=0.1))
train_dataloader = dict(dataset=dict(model_name='favit_b0'))
val_dataloader = dict(dataset=dict(model_name='favit_b0'))
test_dataloader = dict(dataset=dict(model_name='favit_b0'))
