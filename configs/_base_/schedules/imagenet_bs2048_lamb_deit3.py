# The DeiT-III pre-training schedule for a total batch of 2048: LAMB, 5
# warm-up epochs then cosine decay to 1e-5, no weight decay on biases,
# norms, layer scales, class token and position embedding, EMA of the
# weights (decay 0.99996). lr / weight decay / epochs are those of ViT-B,
# L and H; the ViT-S configs override them.
optim_wrapper = dict(
    optimizer=dict(type='Lamb', lr=3e-3, weight_decay=0.02),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }),
)

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    # `end` defaults to the last epoch, T_max to end - begin.
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]

train_cfg = dict(by_epoch=True, max_epochs=400, val_interval=1)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]

# NOTE: `auto_scale_lr` is for automatically scaling LR,
# based on the actual training batch size.
auto_scale_lr = dict(base_batch_size=2048)
