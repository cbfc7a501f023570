# Model inputs made once and shared by every run: the slim checkpoint (official weights, memory-mapped by each run).


if config["model"]["init"] == "official":

    rule convert_checkpoint:
        input:
            checkpoint=grid.OFFICIAL_CHECKPOINT,
            vocab=grid.VOCAB,
        output:
            weights=grid.SLIM_CHECKPOINT,
            report=f"{grid.SLIM_CHECKPOINT}.report.txt",
        log:
            "results/logs/model/convert_checkpoint.log",
        benchmark:
            "results/benchmarks/model/convert_checkpoint.tsv"
        conda:
            "../envs/vlpeft.yaml"
        params:
            model=grid.model_params(config),
        script:
            "../workflow/scripts/convert_checkpoint.py"
