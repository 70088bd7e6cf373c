# Paths and parameter slices shared by the rules. They come from params.yaml
# (the configfile), exactly as dvc.yaml's templated paths do. The configfile is
# checked by the same code as every `multimix` command, and the study expands
# into the same runs as dvc.yaml's matrix stages.

import re
import sys

from multimix import codedeps
from multimix.config import config_from_dict
from multimix.data.acquire import raw_state
from multimix.errors import InputError
from multimix.study import expand as expand_study, run_names

try:
    CHECKED = config_from_dict(config)
except InputError as exc:  # one line, as from every multimix command
    sys.exit(f"multimix: error: {exc}")

RAW = config["data"]["raw_dir"]
INTERIM = config["data"]["interim_dir"]
RECEIPT = f"{RAW}/acquired.json"
MANIFEST = f"{INTERIM}/manifest.csv"
REJECTED = f"{INTERIM}/rejected.csv"
SUMMARY = f"{INTERIM}/harmonise_summary.json"
PROCESSED = config["preprocess"]["processed_dir"]
SPLITS = f"{config['split']['split_dir']}/splits.json"
RUNS = config["train"]["runs_dir"]
RUN_NAMES = run_names(CHECKED)
RUN_SPECS = {spec.name: spec for spec in expand_study(CHECKED)}
PSEUDO = f"{CHECKED.seed004.pseudo_dir}/pseudo_labels.h5"


def method_of(run):
    return RUN_SPECS[run].variant.method


wildcard_constraints:
    run="|".join(re.escape(name) for name in RUN_NAMES) or "^$",


def code(stage, run=None):
    """The source files a stage runs (for a run: its method's), derived from the import graph
    (multimix/codedeps.py): DVC's stages read the same lists from data/code/."""
    return codedeps.files(stage, method_of(run) if run else None)


def param_slice(*keys):
    """Values of dotted params.yaml keys; a change to any reruns the rule
    (Snakemake's default rerun trigger on `params`), like DVC `params:`."""
    out = {}
    for key in keys:
        value = config
        for part in key.split("."):
            value = value[part]
        out[key] = value
    return out


# Jobs on a cluster. Local runs (`--cores N`) keep their threads: one, or every core Snakemake
# has where torch uses them all (such jobs then run in turn). Under the SLURM profile
# (workflow/profiles/slurm, no --cores) each job asks for what params.yaml's `cluster` section
# gives its kind: GPU jobs (train, pseudolabel, evaluate) or CPU jobs (data stages, report).
# Inside a cluster job (Snakemake's remote execution mode) the job runs with the threads it asked
# for, not with every core of the node it landed on.
ON_CLUSTER = workflow.resource_settings.cores is None or workflow.remote_exec


# Several trainings per GPU (cluster.trainings_per_gpu = k > 1, SLURM profile only): the train
# jobs form the group "trainings", and each sbatch job runs k of them side by side. A group job
# asks for the sum of its jobs' cpus and memory, but its GPU as a gres string, which a group
# takes once: one GPU. Snakemake merges independent jobs of a group only as its command line's
# `--group-components trainings=k` says (a Snakefile cannot set it), so the two must agree.
TRAININGS_PER_GPU = CHECKED.cluster.trainings_per_gpu if ON_CLUSTER else 1
TRAINING_GROUP = "trainings" if TRAININGS_PER_GPU > 1 else None


def command_line_group_components(argv):
    """{group: k} from the --group-components options of a Snakemake command line (read as
    Snakemake's own parser reads them: one or more GROUP=K after the option)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--group-components", nargs="+", action="extend", default=[])
    given = parser.parse_known_args(argv[1:])[0].group_components
    return dict(item.split("=", 1) for item in given if "=" in item)


if TRAINING_GROUP and not workflow.remote_exec:
    given = command_line_group_components(sys.argv).get(TRAINING_GROUP)
    if given != str(TRAININGS_PER_GPU):
        sys.exit(f"multimix: error: params.yaml: cluster.trainings_per_gpu = {TRAININGS_PER_GPU} needs "
                 f"`--group-components {TRAINING_GROUP}={TRAININGS_PER_GPU}` on the snakemake command line"
                 f" (found {f'{TRAINING_GROUP}={given}' if given else 'none'})")


def job_threads(kind, every_core=False):
    if ON_CLUSTER:
        return getattr(CHECKED.cluster, kind).cpus
    return workflow.cores if every_core else 1


def job_resources(kind, shared_gpu=False, **local):
    """sbatch's request of one job of `kind` on a cluster; `local` are the resources of a local run.
    `shared_gpu`: the GPU as a gres string, which a job group asks for once, not once per job."""
    if not ON_CLUSTER:
        return local
    jobs = getattr(CHECKED.cluster, kind)
    resources = {"mem_mb": jobs.mem_mb, "runtime": jobs.runtime_min}
    if jobs.gpus and shared_gpu:
        resources["gres"] = f"gpu:{jobs.gpus}"
    elif jobs.gpus:
        resources["gpu"] = jobs.gpus
    if jobs.partition:
        resources["slurm_partition"] = jobs.partition
    if CHECKED.cluster.account:
        resources["slurm_account"] = CHECKED.cluster.account
    return resources
