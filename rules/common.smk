# Config validation, the run grid, wildcard constraints and named input functions.
import vlpeft.cost as cost
import vlpeft.grid as grid
import vlpeft.plots.registry as figreg
import vlpeft.tasks as tasks
from snakemake.utils import validate


def processes(rule):
    """Processes per job of a torchrun rule: the gpu resource the profile (or --set-resources) gives it, else 1;
    None when it is not a plain number."""
    gpu = workflow.resource_settings.overwrite_resources.get(rule, {}).get("gpu")
    gpu = getattr(gpu, "value", gpu)
    if gpu is None:
        return 1
    return max(1, gpu) if isinstance(gpu, int) else None


validate(config, schema="../workflow/schemas/config.schema.yaml")
grid.check_config(
    config,
    train_processes=processes("train_run"),
    pretrain_processes=processes("pretrain_model"),
)

ROOT = grid.study_root(
    config
)  # results/<study>: everything the study writes but the shared downloads
RUNS = grid.run_table(config)
# Name, data source and digest of the study (vlpeft.provenance): a params value of the aggregation, the figures and
# the report, which refuse tables of another study or configuration.
STUDY = grid.study_info(config)
TASKS = list(config["tasks"])
SYNTHETIC = config["data"]["source"] == "synthetic"
CACHE = grid.image_cache_path(config)
FEATURES = grid.features_path(config)
# Cost settings live with the SLURM profile; the predictions give each training job its time limit.
COST_PROFILE = f"{workflow.basedir}/profiles/slurm"
COSTS = f"{ROOT}/cost/runs.json"
# Seconds torchrun leaves the ranks to checkpoint after a signal (vlpeft.launch); a profile sets it below its
# sbatch --signal lead time (set-resources: stop_grace_s).
STOP_GRACE_S = 270
# How a training job without GPUs starts its run: train.warm_start (1) forks it from a server that imported torch
# once (vlpeft.warm; Linux, else it runs cold by itself), instead of a new interpreter importing it again.
WARM_START = int(bool(config["train"].get("warm_start", False)))
# Only the figures the configured grid can fill (vlpeft.plots.registry): Fig. 3/4 per task, Figs. 6-10 per PEFT
# method run on COCO.
FIGURE_STEMS = figreg.study_stems(config)


# Quick jobs that stay on the submitting node on a cluster.
localrules:
    write_run_config,
    aggregate_runs,
    write_report,
    plot_task_grid,
    plot_cost,
    plot_val_curves,


wildcard_constraints:
    task="|".join(TASKS),
    method="|".join(grid.METHODS),
    setting="size[0-9a-z]+_ratio[0-9.e-]+(_cls)?",
    seed="[0-9]+",
    split="train|val|test",
    ratio="[0-9.e-]+",


def res(path):
    """A path under the study's root."""
    return f"{ROOT}/{path}"


def dl(path):
    """A path under the downloads every study with real data shares."""
    return f"{grid.DOWNLOADS}/{path}"


def lookup_run(wildcards):
    run_id = (
        f"{wildcards.task}/{wildcards.method}/{wildcards.setting}/seed{wildcards.seed}"
    )
    if run_id not in RUNS:
        raise ValueError(f"{run_id} is not a run of the configured grid")
    return RUNS[run_id]


_RESOLVED = {}


def attempt_number(wildcards, attempt):
    """The job's attempt (1 = first), a resource so that it reaches the shell (vlpeft.retry) without being a params
    value: a run that succeeded at its second attempt must not look changed to the next invocation.
    """
    return attempt


def resolved_run(wildcards):
    """The run's resolved configuration: a params value, so a changed setting reruns exactly its runs."""
    run = lookup_run(wildcards)
    if (
        run.run_id not in _RESOLVED
    ):  # memoised: asked for by several rules and input functions
        _RESOLVED[run.run_id] = grid.resolve(config, run)
    return _RESOLVED[run.run_id]


def run_inputs(wildcards):
    run = lookup_run(wildcards)
    d = resolved_run(wildcards)
    inputs = {
        "run_config": f"{run.dir}/run_config.yaml",
        "subset": d["subset"],
        "vocab": d["vocab"],
        "init": d["init_weights"],
        "images": res("data/raw/images/.complete"),
    }
    inputs.update({f"records_{s}": p for s, p in d["records"].items()})
    if d["image_cache"]:
        inputs["cache"] = d["image_cache"]
    if d["feature_store"]:
        inputs["features"] = d["feature_store"]
    # ancient: new predictions change the time limits of runs still to come, never rerun a finished one
    inputs["costs"] = ancient(COSTS)
    return inputs


def feature_inputs(wildcards):
    """The store's inputs: the initial weights (its ViT), the records naming every image, the images."""
    spec = grid.resolve_features(config)
    inputs = {
        "init": spec["init_weights"],
        "vocab": spec["vocab"],
        "records": spec["records"],
        "images": f"{ROOT}/data/raw/images/.complete",
    }
    if spec["image_cache"]:
        inputs["cache"] = spec["image_cache"]
    return inputs


def feature_spec(wildcards):
    return grid.resolve_features(config)


def train_runtime(wildcards, input, attempt):
    """The SLURM time limit (minutes) of a training job: its predicted wall time with a margin (vlpeft.cost)."""
    return cost.job_minutes(input.costs, lookup_run(wildcards).run_id, attempt)


def all_records(wildcards=None):
    return [f"{run.dir}/record.json" for run in RUNS.values()]


def baseline_files(wildcards=None):
    return [res(f"baseline/{task}.json") for task in TASKS]


def figure_files():
    return expand(res("figures/{stem}.{ext}"), stem=FIGURE_STEMS, ext=["pdf", "png"])


def vqa_raw_files():
    folders = ["train2014", "val2014"]
    return {
        "questions": [
            res(f"data/raw/v2_OpenEnded_mscoco_{f}_questions.json") for f in folders
        ],
        "annotations": [
            res(f"data/raw/v2_mscoco_{f}_annotations.json") for f in folders
        ],
    }


def expected_counts(task):
    return (config["data"].get("expected_counts") or {}).get(task)


def subset_params(wildcards):
    return {"seed": config["data"]["subset_seed"], "ratio": float(wildcards.ratio)}


def pretrain_config():
    """The resolved pre-training run (mini study): a full fine-tuning run on the synthetic corpus."""
    return grid.resolve_pretrain(config)


def baseline_inputs(wildcards):
    d = grid.resolve_baseline(config, wildcards.task)
    inputs = {
        "vocab": d["vocab"],
        "init": d["init_weights"],
        "images": res("data/raw/images/.complete"),
    }
    inputs.update({f"records_{s}": p for s, p in d["records"].items()})
    if d["image_cache"]:
        inputs["cache"] = d["image_cache"]
    return inputs


def baseline_config(wildcards):
    return grid.resolve_baseline(config, wildcards.task)


def reported_metric():
    """The runs.csv column the figures and the claims report show (a params value: changing it redraws them)."""
    return config.get("reported_metric", "paper_metric")


def figure_params(wildcards):
    """What a figure depends on besides its tables (a curve figure is named by its method: its task stays None, as
    in the params of figures drawn before the figure registry, which must not look changed).
    """
    spec = figreg.figure(wildcards.stem)
    return {
        "task": None if spec.curves else spec.task,
        "method": spec.method,
        "metric": reported_metric(),
        "study": STUDY,
    }


def download_spec(wildcards):
    spec = config["data"]["downloads"].get(wildcards.file)
    if spec is None:
        raise ValueError(
            f"no download configured for {wildcards.file!r} (data.downloads)"
        )
    return spec
