# Data stages: acquire raw files (synthetic / download / local) -> harmonise.


rule acquire:
    input:
        code("acquire"),
    output:
        RECEIPT,
    params:
        p=param_slice("data.source", "data.raw_dir", "data.datasets", "synth", "download"),
        # Raw files may change by hand: their state is a parameter, so a changed tree reruns
        # this rule (DVC: always_changed); an unchanged receipt reruns nothing downstream.
        raw=lambda wildcards: raw_state(CHECKED),
    threads: job_threads("cpu_jobs")
    resources:
        **job_resources("cpu_jobs"),
    log:
        "data/logs/acquire.log",
    shell:
        "multimix -q --log {log} acquire"


rule harmonise:
    input:
        RECEIPT,
        code("harmonise"),
    output:
        MANIFEST,
        REJECTED,
        SUMMARY,
    params:
        p=param_slice("data.datasets", "data.nihx", "data.interim_dir"),
    threads: job_threads("cpu_jobs")
    resources:
        **job_resources("cpu_jobs"),
    log:
        "data/logs/harmonise.log",
    shell:
        "multimix -q --log {log} harmonise"


rule preprocess:
    input:
        MANIFEST,
        RECEIPT,  # pixels can change while the manifest stays identical (e.g. a new synth seed)
        code("preprocess"),
    output:
        directory(PROCESSED),
    params:
        p=param_slice("data.datasets", "preprocess.size", "preprocess.aspect", "preprocess.clip_percentiles", "preprocess.processed_dir"),
    threads: job_threads("cpu_jobs")
    resources:
        **job_resources("cpu_jobs"),
    log:
        "data/logs/preprocess.log",
    shell:
        "multimix -q --log {log} preprocess"


rule split:
    input:
        PROCESSED,
        code("split"),
    output:
        SPLITS,
    params:
        p=param_slice("split", "seed004.subsets"),  # and the methods' own subsets (MethodPlugin.subsets)
    threads: job_threads("cpu_jobs")
    resources:
        **job_resources("cpu_jobs"),
    log:
        "data/logs/split.log",
    shell:
        "multimix -q --log {log} split"
