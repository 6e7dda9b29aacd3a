default_scope = 'mmseg'
# Registers mmseg_ris's datasets, transforms, models and metrics into mmseg's registries.
custom_imports = dict(imports=['mmseg_ris'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# A progress bar over the val/test batches on stderr (main process only); switch it off with
# --cfg-options custom_hooks.0.enable=False. Configs that set custom_hooks replace this list.
custom_hooks = [dict(type='RISProgressBarHook')]
