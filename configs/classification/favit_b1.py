# FaViT-B1, ImageNet-1k from scratch, 300 epochs (+10 cooldown); README top-1 79.4 (no weights released).
# Official configs/favit/favit_b1.py: drop_path 0.1, clip_grad None.
_base_ = '../_base_/favit_in1k.py'
model = dict(model_name='favit_b1', model_kwargs=dict(drop_path_rate=0.1))
train_dataloader = dict(dataset=dict(model_name='favit_b1'))
val_dataloader = dict(dataset=dict(model_name='favit_b1'))
test_dataloader = dict(dataset=dict(model_name='favit_b1'))
