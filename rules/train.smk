# Training: one resolved config file and one torchrun job per run of the grid (and the mini study's pre-training).


rule write_run_config:
    output:
        res("runs/{task}/{method}/{setting}/seed{seed}/run_config.yaml"),
    log:
        res("logs/run_config/{task}/{method}/{setting}/seed{seed}.log"),
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
        record=res("runs/{task}/{method}/{setting}/seed{seed}/record.json"),
    log:
        res("logs/train/{task}/{method}/{setting}/seed{seed}.log"),
    benchmark:
        res("benchmarks/train/{task}/{method}/{setting}/seed{seed}.tsv")
    conda:
        "../envs/vlpeft.yaml"
    threads: 1
    resources:
        gpu=0,
        warm_start=WARM_START,
        runtime=train_runtime,
        attempt=attempt_number,
        stop_grace_s=STOP_GRACE_S,
    params:
        run=resolved_run,
    shell:
        # vlpeft.retry first: a retry (the SLURM profile's `retries`) starts only after a preempted attempt; any other
        # failure fails once, its log kept in {log} (the check runs before the redirection truncates it).
        # gpu=0 (local CPU runs): one plain process, no launcher (torchrun would import torch a second time); with
        # train.warm_start, a fork of a server that imported torch once (vlpeft.warm: 3 s less per run; a resource, not
        # a param, so that turning it on or off reruns nothing: the results are the same). On SLURM
        # the profile sets gpu=4: vlpeft.launch runs torchrun with four processes, one per GPU, gives the ranks
        # stop_grace_s seconds to checkpoint after a signal and exits 75 for a preempted run (torchrun would say 1).
        # `exec`: the process replaces the shell, so a SIGTERM (time limit, preemption) reaches the run and it
        # checkpoints; a plain shell would die at once and take the step with it.
        "python -m vlpeft.retry --run-dir $(dirname {input.run_config}) --attempt {resources.attempt} --log {log}"
        " && if [ {resources.gpu} -gt 0 ]; then launch='vlpeft.launch --nproc-per-node {resources.gpu} --stop-grace {resources.stop_grace_s}';"
        " elif [ {resources.warm_start} -eq 1 ]; then launch='vlpeft.warm vlpeft.train'; else launch=vlpeft.train; fi;"
        " OMP_NUM_THREADS={threads} exec python -m $launch --config {input.run_config} > {log} 2>&1"


if config["model"]["init"] == "pretrain":

    rule prepare_pretrain_corpus:
        input:
            res("data/raw/pretrain_captions.json"),
        output:
            res("data/prepared/pretrain/train.jsonl"),
        log:
            res("logs/data/prepare_pretrain_corpus.log"),
        localrule: True
        conda:
            "../envs/vlpeft.yaml"
        script:
            "../workflow/scripts/prepare_pretrain_corpus.py"

    rule write_pretrain_config:
        output:
            res("model/pretrain/run_config.yaml"),
        log:
            res("logs/run_config/pretrain.log"),
        localrule: True
        conda:
            "../envs/vlpeft.yaml"
        params:
            run=pretrain_config(),
        script:
            "../workflow/scripts/write_run_config.py"

    rule pretrain_model:
        input:
            run_config=res("model/pretrain/run_config.yaml"),
            records=res("data/prepared/pretrain/train.jsonl"),
            val=grid.records_path(ROOT, tasks.COCO.name, "val"),
            vocab=grid.vocab_path(ROOT),
            images=res("data/raw/images/.complete"),
            cache=CACHE or [],
        output:
            grid.init_weights_path(config),
        log:
            res("logs/train/pretrain.log"),
        benchmark:
            res("benchmarks/train/pretrain.tsv")
        conda:
            "../envs/vlpeft.yaml"
        threads: 2
        resources:
            gpu=0,
            warm_start=WARM_START,
            attempt=attempt_number,
            stop_grace_s=STOP_GRACE_S,
        params:
            run=pretrain_config(),
        shell:
            "python -m vlpeft.retry --run-dir $(dirname {input.run_config}) --attempt {resources.attempt} --log {log}"
            " && if [ {resources.gpu} -gt 0 ]; then launch='vlpeft.launch --nproc-per-node {resources.gpu} --stop-grace {resources.stop_grace_s}';"
            " elif [ {resources.warm_start} -eq 1 ]; then launch='vlpeft.warm vlpeft.train'; else launch=vlpeft.train; fi;"
            " OMP_NUM_THREADS={threads} exec python -m $launch --config {input.run_config} > {log} 2>&1"
