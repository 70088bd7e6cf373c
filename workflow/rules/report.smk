# Evaluation of every run, then the study report.

REPORT = config["report"]["dir"]
EVAL = config["evaluate"]["dir"]
REPORT_FILES = [
    f"{REPORT}/{name}"
    for name in (
        "table2_in_domain.md", "table2_in_domain.csv", "table3_cross_domain.md", "table3_cross_domain.csv",
        "claims.md", "claims.csv", "bridge_sensitivity.md", "bridge_sensitivity.csv",
        "saliency_localisation.md", "saliency_localisation.csv", "paper_comparison.md", "runs_summary.csv", "summary.json",
    )
]


def evaluate_inputs(wildcards):
    # the manifest and raw files: the phantoms' opacity masks (saliency scores), seed 004's
    # CheXlocalize masks at native size
    return [MANIFEST, RECEIPT] + code("evaluate", wildcards.run)


EVALUATE_SETTINGS = ["evaluate.dir"]
CHEXSEG_EVALUATE_SETTINGS = ["evaluate.dir", "seed004"]


def evaluate_params(wildcards):
    chexseg = method_of(wildcards.run) == "chexseg"
    return param_slice(*(CHEXSEG_EVALUATE_SETTINGS if chexseg else EVALUATE_SETTINGS))


rule evaluate:
    input:
        f"{RUNS}/{{run}}/best.pt",
        f"{RUNS}/{{run}}/metrics.json",
        SPLITS,
        PROCESSED,
        evaluate_inputs,
    output:
        f"{EVAL}/{{run}}/per_image.csv",
        f"{EVAL}/{{run}}/examples.npz",
        f"{EVAL}/{{run}}/metrics.json",
    params:
        p=evaluate_params,
    # All cores, as under DVC: torch's thread count changes float summation order, and the
    # bridge sensitivity (a difference of nearly equal logits) would differ in the 7th digit.
    threads: job_threads("gpu_jobs", every_core=True)
    resources:
        **job_resources("gpu_jobs"),
    log:
        "data/logs/evaluate/{run}.log",
    shell:
        "multimix -q --log {log} evaluate --run {wildcards.run}"


rule report:
    input:
        expand(f"{EVAL}/{{run}}/{{name}}", run=RUN_NAMES, name=["per_image.csv", "examples.npz", "metrics.json"]),
        expand(f"{RUNS}/{{run}}/history.csv", run=RUN_NAMES),  # per-epoch bridge sensitivity
        code("report"),
    output:
        REPORT_FILES,
        report(directory(f"{REPORT}/figures"), patterns=["{name}.png"], caption="../report/figures.rst",
               category="MultiMix"),
    params:
        p=param_slice("study", "multimix.saliency_norm", "preprocess.size", "train.epochs", "train.steps_per_epoch",
                      "train.batch_size", "train.lr", "train.lr_step_epochs", "train.lr_gamma", "report.dir"),
    threads: job_threads("cpu_jobs")
    resources:
        **job_resources("cpu_jobs"),
    log:
        "data/logs/report.log",
    shell:
        "multimix -q --log {log} report"
