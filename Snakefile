# multimix pipeline, Snakemake entry point: `snakemake --cores 2` from the
# project root. The workflow lives in workflow/ (snakemake-workflows layout).
# Snakemake 9 drops an included file's default target, so it is re-declared
# here as the first rule of this file.
include: "workflow/Snakefile"


rule default:
    default_target: True
    input:
        rules.all.input,
