# Data stages: acquire raw files (synthetic / download / local) -> harmonise.


rule acquire:
    input:
        code("data/acquire.py", "data/synth.py", "data/phantom.py", "data/formats.py", "data/download.py", "data/sources.yaml"),
    output:
        RECEIPT,
    params:
        p=param_slice("data.source", "data.raw_dir", "data.datasets", "synth", "download"),
    shell:
        "multimix -q acquire"


rule harmonise:
    input:
        RECEIPT,
        code("data/harmonise.py", "data/formats.py", "data/layout.py"),
    output:
        MANIFEST,
        REJECTED,
        SUMMARY,
    params:
        p=param_slice("data.datasets", "data.nihx", "data.interim_dir"),
    shell:
        "multimix -q harmonise"


rule preprocess:
    input:
        MANIFEST,
        RECEIPT,  # pixels can change while the manifest stays identical (e.g. a new synth seed)
        code("data/preprocess.py", "data/formats.py"),
    output:
        directory(PROCESSED),
    params:
        p=param_slice("data.datasets", "preprocess.size", "preprocess.aspect", "preprocess.clip_percentiles", "preprocess.processed_dir"),
    shell:
        "multimix -q preprocess"


rule split:
    input:
        PROCESSED,
        code("data/split.py"),
    output:
        SPLITS,
    params:
        p=param_slice("split"),
    shell:
        "multimix -q split"
