"""CheXseg (seed 004, Gadgil et al. 2021): segmentation of ten pathologies from a few expert
masks mixed with Grad-CAM pseudo-labels, and self-distillation.

  presets.py       its roles: pathology classifiers, the p-sweep's segmenters, teachers, students
  config.py        the `seed004` section, `study.chexseg`, the runs it lists and its split subsets
  network.py       DenseNet121 / ResNet18 classifiers and DeepLabV3+ (MONAI blocks)
  pseudolabels.py  Grad-CAM maps -> thresholded masks (`multimix pseudolabel`)
  checkpoints.py   the pseudo-label file, a best.pt's network, per-pathology AUC
  training.py      the trainer of every role
  evaluation.py    CheXlocalize's test set and IoU conventions
  prediction.py    its networks on new images (`multimix predict`)
  report.py        chexseg.md: the p-sweep, distillation, classifiers (its Table 1)
"""

from __future__ import annotations

from multimix.methods.base import MethodPlugin
from multimix.methods.chexseg import config
from multimix.methods.chexseg.presets import PRESETS


def cmd_pseudolabel(args, cfg) -> None:
    from multimix.methods.chexseg.pseudolabels import write_pseudo_labels

    write_pseudo_labels(cfg, args.classifier, device=args.device)


class ChexsegPlugin(MethodPlugin):
    name = "chexseg"
    presets = PRESETS
    sections = {"seed004": config.Seed004Config}
    study_sections = {"chexseg": config.ChexsegStudy}
    commands = ("pseudolabel",)

    def validate(self, cfg, where):
        config.validate(cfg, where)

    def runs(self, cfg):
        return config.runs(cfg.study.chexseg)

    def subsets(self, cfg, partitions):
        return config.subsets(cfg, partitions)

    def describe_subsets(self, info):
        return config.describe_subsets(info)

    def trainer(self, spec):
        from multimix.methods.chexseg.training import ChexsegMethod

        return ChexsegMethod

    def load_predictor(self, best, device):
        from multimix.methods.chexseg.checkpoints import load_predictor

        return load_predictor(best, device)

    def evaluate(self, cfg, spec, device):
        from multimix.methods.chexseg.evaluation import evaluate_run

        per_image, summary = evaluate_run(cfg, spec, device)
        return per_image, summary, {}

    def predict(self, cfg, spec, predictor, x):
        from multimix.methods.chexseg.prediction import predict

        return predict(spec, predictor, x)

    def summary_lines(self, run, summary):
        main = (f"mIoU {summary['mIoU']['mean']:.4f} [{summary['mIoU']['lower']:.4f}, {summary['mIoU']['upper']:.4f}]"
                if "mIoU" in summary else f"mean AUC {summary['mean_auc']:.4f}")
        return [f"{run} — chexlocalize test ({summary['images']} images): {main}"]

    def report(self, cfg, runs, out):
        if not runs:
            return []
        from multimix.methods.chexseg import report

        return report.write(cfg, out)

    def add_commands(self, sub):
        p = sub.add_parser("pseudolabel", help="seed 004: Grad-CAM pseudo-labels of a trained pathology classifier")
        p.add_argument("--classifier", required=True, choices=["densenet121", "resnet18"], help="its architecture")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
        p.set_defaults(func=cmd_pseudolabel)


PLUGIN = ChexsegPlugin()
