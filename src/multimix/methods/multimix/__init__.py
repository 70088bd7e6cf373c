"""MultiMix (seeds 001-002, Haque et al.) and the eight baselines of its paper: one network for
pneumonia classification and lung segmentation from few labels.

  config.py      the `multimix` section: the saliency scaling, the loss weights, Enc-MixMatch
  presets.py     the nine variants (U-Net, Enc, Enc-SSL, Enc-MM, UMTL, UMTL-S, UMTL-SSL,
                 UMTL-SSL-S, MultiMix): five switches of one network
  network.py     the shared encoder, classifier head, decoder and the saliency bridge
  training.py    the trainer: one step with the efficient schedule, validation, figures
  report.py      its paper's Tables 2-3, claims, bridge sensitivity, saliency localisation
  paper_tables.csv  the paper's values, transcribed
"""

from __future__ import annotations

from multimix.methods.base import MethodPlugin
from multimix.methods.multimix import config
from multimix.methods.multimix.presets import PRESETS


class MultiMixPlugin(MethodPlugin):
    name = "multimix"
    presets = PRESETS
    sections = {"multimix": config.MultiMixConfig}
    test_set_results = True
    featured_presets = ("multimix",)

    def validate(self, cfg, where):
        config.validate(cfg, where)

    def trainer(self, spec):
        from multimix.methods.multimix.training import MultiMixMethod

        return MultiMixMethod

    def load_predictor(self, best, device):
        from multimix.methods.multimix.training import load_predictor

        return load_predictor(best, device)

    def evaluate(self, cfg, spec, device):
        from multimix import testsets

        model = self.load_best(cfg, spec, device)

        def without_saliency(x):  # the bridge's ablation: the decoder with its saliency channel zeroed
            return model(x, with_classifier=False, zero_saliency=True).mask_logits

        return testsets.evaluate(cfg, spec, model, device, ablation=without_saliency if model.bridge else None)

    def predict(self, cfg, spec, predictor, x):
        from multimix import testsets
        from multimix.data import layout

        variant = spec.variant
        return testsets.predictions(predictor, x, variant.segmentation, variant.classification,
                                    layout.CLASS_NAMES[cfg.split.classification_dataset])

    def report(self, cfg, runs, out):
        from multimix.methods.multimix import report

        return report.report(cfg, runs, out)


PLUGIN = MultiMixPlugin()
