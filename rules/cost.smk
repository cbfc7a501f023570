# Cost predictions of every run (samples, FLOPs, GPU-hours): the training jobs' time limits are read from them.


rule predict_costs:
    input:
        settings=f"{COST_PROFILE}/cost.yaml",
        profile=f"{COST_PROFILE}/config.yaml",
    output:
        COSTS,
    log:
        res("logs/cost/predict_costs.log"),
    localrule: True
    conda:
        "../envs/vlpeft.yaml"
    params:
        study=cost.cost_inputs(config),
    script:
        "../workflow/scripts/predict_costs.py"
