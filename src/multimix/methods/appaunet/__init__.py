"""Seed 003 (Imran & Terzopoulos, MLMI 2019): segmentors trained with the KL-Tversky loss, and
APPAU-Net, PPAU-Net trained adversarially against an (n+1)-class discriminator that also
classifies the disease.

  presets.py     `<segmentor>_<loss>` and `appaunet_<loss>`
  config.py      the `seed003` section (loss weights, discriminator, optimisers)
  network.py     U-Net, Attention U-Net and PPAU-Net (MONAI blocks), the discriminator
  training.py    the trainer (Algorithm 1's two updates), its predictor
  report.py      seed003.md: its Tables 1-2's columns beside the paper's rows
  paper_tables.csv  the paper's values, transcribed
"""

from __future__ import annotations

from multimix.methods.appaunet import config
from multimix.methods.appaunet.presets import PRESETS
from multimix.methods.base import MethodPlugin


class APPAUNetPlugin(MethodPlugin):
    name = "appaunet"
    presets = PRESETS
    sections = {"seed003": config.Seed003Config}
    test_set_results = True

    def validate(self, cfg, where):
        config.validate(cfg, where)

    def trainer(self, spec):
        from multimix.methods.appaunet.training import APPAUNetMethod

        return APPAUNetMethod

    def load_predictor(self, best, device):
        from multimix.methods.appaunet.training import load_predictor

        return load_predictor(best, device)

    def evaluate(self, cfg, spec, device):
        from multimix import testsets

        return testsets.evaluate(cfg, spec, self.load_best(cfg, spec, device), device)

    def predict(self, cfg, spec, predictor, x):
        from multimix import testsets
        from multimix.data import layout

        # the discriminator's classes are those of the segmentation source it was trained on
        return testsets.predictions(predictor, x, True, predictor.discriminator is not None,
                                    layout.CLASS_NAMES[cfg.split.segmentation_dataset])

    def report(self, cfg, runs, out):
        from multimix.methods.appaunet import report

        return report.report(cfg, runs, out)


PLUGIN = APPAUNetPlugin()
