# L²ViT-Base, ImageNet-1k from scratch, 300 epochs, EMA 0.9999; README top-1 84.4. drop path 0.3 (official README).
_base_ = '../_base_/l2vit_in1k.py'
model = dict(model_name='l2vit_base', model_kwargs=dict(drop_path_rate=0.3))
train_dataloader = dict(dataset=dict(model_name='l2vit_base'))
val_dataloader = dict(dataset=dict(model_name='l2vit_base'))
test_dataloader = dict(dataset=dict(model_name='l2vit_base'))
