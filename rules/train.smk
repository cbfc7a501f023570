# Training: one resolved config file and one torchrun job per run of the grid (and the mini study's pre-training).


rule write_run_config:
    output:
        "results/runs/{task}/{method}/{setting}/seed{seed}/run_config.yaml",
    log:
        "results/logs/run_config/{task}/{method}/{setting}/seed{seed}.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        run=resolved_run,
    script:
        "../workflow/scripts/write_run_config.py"


rule train_run:
    input:
        unpack(run_inputs),
    output:
        record="results/runs/{task}/{method}/{setting}/seed{seed}/record.json",
    log:
        "results/logs/train/{task}/{method}/{setting}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{task}/{method}/{setting}/seed{seed}.tsv"
    conda:
        "../envs/vlpeft.yaml"
    threads: 1
    resources:
        gpu=0,
        runtime=train_runtime,
        stop_grace_s=STOP_GRACE_S,
    params:
        run=resolved_run,
    shell:
        # gpu=0 (local CPU runs): one plain process, no launcher (torchrun would import torch a second time). On SLURM
        # the profile sets gpu=4: vlpeft.launch runs torchrun with four processes, one per GPU, gives the ranks
        # stop_grace_s seconds to checkpoint after a signal and exits 75 for a preempted run (torchrun would say 1).
        # `exec`: the process replaces the shell, so a SIGTERM (time limit, preemption) reaches the run and it
        # checkpoints; a plain shell would die at once and take the step with it.
        "if [ {resources.gpu} -gt 0 ]; then launch='vlpeft.launch --nproc-per-node {resources.gpu} --stop-grace {resources.stop_grace_s}';"
        " else launch=vlpeft.train; fi;"
        " OMP_NUM_THREADS={threads} exec python -m $launch --config {input.run_config} > {log} 2>&1"


if config["model"]["init"] == "pretrain":

    rule prepare_pretrain_corpus:
        input:
            "results/data/raw/pretrain_captions.json",
        output:
            "results/data/prepared/pretrain/train.jsonl",
        log:
            "results/logs/data/prepare_pretrain_corpus.log",
        localrule: True
        conda:
            "../envs/vlpeft.yaml"
        script:
            "../workflow/scripts/prepare_pretrain_corpus.py"

    rule write_pretrain_config:
        output:
            "results/model/pretrain/run_config.yaml",
        log:
            "results/logs/run_config/pretrain.log",
        localrule: True
        conda:
            "../envs/vlpeft.yaml"
        params:
            run=pretrain_config(),
        script:
            "../workflow/scripts/write_run_config.py"

    rule pretrain_model:
        input:
            run_config="results/model/pretrain/run_config.yaml",
            records="results/data/prepared/pretrain/train.jsonl",
            val=grid.records_path("coco", "val"),
            vocab=grid.VOCAB,
            images="results/data/raw/images/.complete",
            cache=CACHE or [],
        output:
            grid.init_weights_path(config),
        log:
            "results/logs/train/pretrain.log",
        benchmark:
            "results/benchmarks/train/pretrain.tsv"
        conda:
            "../envs/vlpeft.yaml"
        threads: 2
        resources:
            gpu=0,
            stop_grace_s=STOP_GRACE_S,
        params:
            run=pretrain_config(),
        shell:
            "if [ {resources.gpu} -gt 0 ]; then launch='vlpeft.launch --nproc-per-node {resources.gpu} --stop-grace {resources.stop_grace_s}';"
            " else launch=vlpeft.train; fi;"
            " OMP_NUM_THREADS={threads} exec python -m $launch --config {input.run_config} > {log} 2>&1"
