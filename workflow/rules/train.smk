# Training: one job per run of the study (presets x label counts x repeats,
# expanded by multimix/study.py as dvc.yaml's matrix stages expand it).

TRAIN_SETTINGS = [
    "study.name", "model", "train.runs_dir", "train.epochs", "train.steps_per_epoch", "train.batch_size", "train.lr",
    "train.lr_step_epochs", "train.lr_gamma", "train.strong_max_ops", "train.loss", "train.mixmatch", "seed003",
]


rule train:
    input:
        SPLITS,
        PROCESSED,
        code("training/loop.py", "training/streams.py", "methods/__init__.py", "methods/base.py", "methods/multimix.py",
             "methods/appaunet.py", "losses.py", "augment.py", "presets.py", "study.py", "tracking.py",
             "models/multimix.py", "models/ppaunet.py", "data/layout.py", "data/loader.py"),
    output:
        f"{RUNS}/{{run}}/best.pt",
        f"{RUNS}/{{run}}/history.csv",
        directory(f"{RUNS}/{{run}}/figures"),
        f"{RUNS}/{{run}}/metrics.json",
    params:
        p=param_slice(*TRAIN_SETTINGS),
    # A training job uses every core it is given (torch's threads): two at once on
    # the same cores only thrash, so each job takes them all and jobs run in turn.
    threads: workflow.cores
    resources:
        gpu=1,  # on GPU machines: `--resources gpu=N` runs N trainings at once
    log:
        "data/logs/train/{run}.log",
    shell:
        "multimix -q --log {log} train --run {wildcards.run}"
