# Training: one job per run of the study (presets x label counts x repeats,
# expanded by multimix/study.py as dvc.yaml's matrix stages expand it). Seed 004's
# runs (study.chexseg) read other files and settings, as their DVC stages list.

TRAIN_SETTINGS = [
    "study.name", "train.runs_dir", "train.epochs", "train.steps_per_epoch", "train.batch_size", "train.lr",
    "train.lr_step_epochs", "train.lr_gamma", "train.strong_max_ops", "train.data_on_device", "train.precision", "train.channels_last",
    "multimix", "seed003",
]
CHEXSEG_SETTINGS = ["study.name", "train.runs_dir", "train.epochs", "train.steps_per_epoch", "train.data_on_device",
                    "train.precision", "train.channels_last", "seed004"]


def train_inputs(wildcards):
    spec = RUN_SPECS[wildcards.run]
    if spec.variant.method != "chexseg":
        return code("train", wildcards.run)
    role, extra = spec.variant.role, []
    if role != "classifier":  # every segmenter depends on the encoder init of the paper's best setting
        extra.append(f"{RUNS}/pathology_resnet18/best.pt")
    if role == "segmenter":
        extra.append(PSEUDO)
    if role == "student":
        extra.append(f"{RUNS}/teacher_{spec.variant.init}/best.pt")
    return extra + code("train", wildcards.run)


def train_params(wildcards):
    chexseg = method_of(wildcards.run) == "chexseg"
    return param_slice(*(CHEXSEG_SETTINGS if chexseg else TRAIN_SETTINGS))


rule train:
    input:
        SPLITS,
        PROCESSED,
        train_inputs,
    output:
        f"{RUNS}/{{run}}/best.pt",
        f"{RUNS}/{{run}}/history.csv",
        directory(f"{RUNS}/{{run}}/figures"),
        f"{RUNS}/{{run}}/metrics.json",
    params:
        p=train_params,
    # A training job uses every core it is given (torch's threads): two at once on
    # the same cores only thrash, so each job takes them all and jobs run in turn.
    threads: job_threads("gpu_jobs", every_core=True)
    resources:
        # local GPU machines: `--resources gpu=N` runs N trainings at once
        **job_resources("gpu_jobs", shared_gpu=TRAINING_GROUP is not None, gpu=1),
    group:
        TRAINING_GROUP  # k trainings per SLURM job and GPU (common.smk)
    log:
        "data/logs/train/{run}.log",
    shell:
        "multimix -q --log {log} train --run {wildcards.run}"


if CHECKED.study.chexseg.cam:

    rule pseudolabel:
        input:
            f"{RUNS}/pathology_{CHECKED.study.chexseg.cam[0]}/best.pt",
            SPLITS,
            PROCESSED,
            RECEIPT,
            codedeps.files("pseudolabel", "chexseg"),
        output:
            PSEUDO,
            PSEUDO.replace(".h5", ".json"),
        params:
            p=param_slice("seed004"),
        threads: job_threads("gpu_jobs", every_core=True)
        resources:
            **job_resources("gpu_jobs"),
        log:
            "data/logs/pseudolabel.log",
        shell:
            f"multimix -q --log {{log}} pseudolabel --classifier {CHECKED.study.chexseg.cam[0]}"
