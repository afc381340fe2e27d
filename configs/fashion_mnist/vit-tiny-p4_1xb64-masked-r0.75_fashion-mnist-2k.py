# Claim (3) of the study, the control: plain masked training. The main (and
# only) forward of every training iteration is masked at ratio 0.75 by
# AugMask's own masking code; no sub-model; evaluation is unmasked.
# NOTE: MaskedMainClassifier is a study tool (tools/study/masked_main.py),
# not part of augsub_mm: run with tools/study on PYTHONPATH (the study
# driver has it there).
_base_ = './vit-tiny-p4_1xb64_fashion-mnist-2k.py'

custom_imports = dict(
    imports=['augsub_mm', 'masked_main'], allow_failed_imports=False)
model = dict(
    type='MaskedMainClassifier',
    mask=dict(type='AugMask', ratio=0.75))
