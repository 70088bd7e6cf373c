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
