# Sparsifiner on the digits demo, phase 1: only the connectivity predictors train, distilled onto the
# dense teacher's attention maps (0.01 x mean over layers of the summed squared error); the backbone
# (from sparsifiner_digits_dense.py) runs dense attention and stays frozen.
#   python tools/train.py configs/classification/sparsifiner_digits_phase1.py
_base_ = ['./sparsifiner_digits_dense.py']

model = dict(
    _delete_=True,
    type='SparsifinerClassifier',
    model_name='sparsifiner_deit_tiny',
    num_classes=10,
    phase='recon',
    init_checkpoint='work_dirs/sparsifiner_digits_dense/epoch_12.pth',
    model_kwargs=dict(keep_rate=0.25, img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
                      reduce_n_factor=6, reduce_c_factor=2, basis_topk=8, drop_path_rate=0.0),
    mixup=None,
    smoothing=0.1,
)
digits_epochs = 3
optim_wrapper = dict(optimizer=dict(lr=3e-3, weight_decay=0.05))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=digits_epochs, eta_min_ratio=0.1, by_epoch=True,
                        begin=0, end=digits_epochs, convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=digits_epochs, val_interval=1)
