# Evaluation of the untuned initial model: the reference every fine-tuned run is compared with.


def baseline_inputs(wildcards):
    d = grid.resolve_baseline(config, wildcards.task)
    inputs = {
        "vocab": d["vocab"],
        "init": d["init_weights"],
        "images": "results/data/raw/images/.complete",
    }
    inputs.update({f"records_{s}": p for s, p in d["records"].items()})
    if d["image_cache"]:
        inputs["cache"] = d["image_cache"]
    return inputs


def baseline_config(wildcards):
    return grid.resolve_baseline(config, wildcards.task)


rule evaluate_baseline:
    input:
        unpack(baseline_inputs),
    output:
        "results/baseline/{task}.json",
    log:
        "results/logs/evaluate/baseline_{task}.log",
    benchmark:
        "results/benchmarks/evaluate/baseline_{task}.tsv"
    params:
        run=baseline_config,
    threads: 1
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/evaluate_baseline.py"
