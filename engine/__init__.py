"""The training engine shared by train.py, evaluate.py, predict.py, pretrain.py, scripts/demo.py and
benchmarks.gpu_check.

Modules (import the one you need; nothing heavy is imported here):

- ``config``: the documented recipes (PRESETS) and the defaults every training run gets (BASE_DEFAULTS);
- ``distributed``: process-group set-up under torchrun and the device of each process;
- ``precision``: precision and autocast, channels_last, TF32 off for exact fp32;
- ``rng``: seeding, capture and restore of every RNG state (exact ``--resume``);
- ``checkpoint``: atomic torch.save, loading and checking training checkpoints;
- ``schedule``: the learning-rate shape (warm-up, cosine or steps) and the linear batch scaling of the rate;
- ``data``: the loader of a split from the command-line options, the class count and inference facts (class
  names, frame size) from a manifest, batches on the device;
- ``evaluation``: top-k counts and the one-pass evaluation of several networks at several frame counts;
- ``inference``: our or official checkpoints into a network, the checkpoints' inference record;
- ``reporting``: the plain-text accuracy table and the plot of top-1 against frames and against GFLOPs;
- ``cost``: multiply-adds per video (torch's FLOP counter), the timed forward pass and the latency per video;
- ``backbone_cache``: where pretrain.py keeps a pretrained backbone (one folder per setting).
"""
